"""Consul discovery: blocking-query watches per service, last known good kept through outages.

Each mesh service gets a watch on ``/v1/health/service/<name>`` (``passing`` by default,
``?stale`` by default) the first time it is used, run by py-consul on meshlib's httpx client in a
private event loop thread, so neither the caller's loop nor its threads ever block on Consul and
sync and async clients share one set of watches. The rules are Consul's own:

* blocking queries with ``index`` and ``wait``; the index is reset to 0 when it goes backwards
  and is never below 1; results are compared, not indexes, so an index bump with the same
  endpoints changes nothing; wake-ups are rate-limited (``min_interval``);
* on an error the watch backs off with jitter and **keeps the last good endpoints**, marked
  stale; the staleness is visible in ``mesh_state()`` and an optional bound turns stale data
  into a ``DiscoveryError``; a 403 is logged loudly and retried slowly; a valid empty answer
  (the service was deregistered) is applied, but an error, a timeout or a malformed body never
  empties the set;
* service names are validated before any call (``../kv/x`` never reaches Consul) and registry
  data is validated before use (``consul_parse``);
* a watch stops after ``idle_timeout`` without use and starts again on the next use.

First use waits for the first answer up to ``first_timeout``, then fails with a clear
``DiscoveryError`` that names Consul's address (never its token).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import consul
import httpx

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.consul.http import async_consul
from meshlib.consul.parse import ParsedEntries, foreign, parse_health_entries, valid_service_name
from meshlib.consul.settings import ConsulSettings
from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.errors import DiscoveryError

__all__ = ["ConsulDiscovery", "ConsulOptions"]

log = logging.getLogger("meshlib.discovery")


@dataclass(frozen=True, kw_only=True)
class ConsulOptions:
    """How Consul is read (``MESH_CONSUL_*``)."""

    include_warning: bool = False
    stale: bool = True
    wait: float = 300.0
    near: str | None = None
    first_timeout: float = 5.0
    max_staleness: float | None = None
    idle_timeout: float = 600.0
    min_interval: float = 0.05
    error_backoff_min: float = 0.5
    error_backoff_max: float = 30.0
    forbidden_backoff: float = 60.0
    allow_link_local: bool = False
    max_response_bytes: int = 4 * 1024 * 1024
    """Largest answer a watch reads; a bigger one fails that round
    (``MESH_CONSUL_MAX_RESPONSE_BYTES``)."""
    query_margin: float = 5.0
    """A query's total deadline: ``wait x 17/16`` (Consul's jitter) plus this, or this alone
    for a non-blocking query; a server that drips bytes cannot pin a watch past it."""
    max_watches: int = 64
    """Most services watched with blocking queries at once (MESH_CONSUL_MAX_WATCHES); the
    others are polled with non-blocking queries every ``poll_interval``."""
    poll_interval: float = 10.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.wait <= 600.0:
            raise ValueError(f"Consul wait must be within [1s, 10m], got {self.wait:g}s")
        if self.first_timeout <= 0:
            raise ValueError(f"first_timeout must be > 0, got {self.first_timeout}")
        if self.max_response_bytes < 1024:
            raise ValueError(
                f"max_response_bytes must be at least 1024, got {self.max_response_bytes}"
            )
        if self.query_margin <= 0:
            raise ValueError(f"query_margin must be > 0, got {self.query_margin}")
        if not 1 <= self.max_watches <= 10_000:
            raise ValueError(f"max_watches must be within [1, 10000], got {self.max_watches}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {self.poll_interval}")


@dataclass
class _Watch:
    target: Target
    first: concurrent.futures.Future[Resolution] = field(default_factory=concurrent.futures.Future)
    resolution: Resolution | None = None
    last_used: float = 0.0
    last_good: float = 0.0
    index: int = 0
    errors: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = None
    blocking: bool = False
    """Holds one of the ``max_watches`` blocking slots (else it polls)."""
    invalid_entries: int = 0
    """Invalid entries in the last answer (skipped, or the whole answer rejected)."""
    invalid_entries_total: int = 0
    rejected_updates: int = 0
    """Answers refused because every entry was invalid (the last good set was kept)."""


class ConsulDiscovery(Discovery):
    """Endpoints from Consul's health API, watched with blocking queries."""

    def __init__(
        self,
        settings: ConsulSettings,
        options: ConsulOptions | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or ConsulOptions()
        self._clock = clock
        self._rng = rng or random.Random()
        self._watches: dict[Target, _Watch] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._consul: Any = None
        self._closed = False
        self._blocking: set[Target] = set()
        self._warned_polling = False

    # -- the request path --------------------------------------------------------------------

    def lookup(self, target: Target) -> Resolution | None:
        w = self._watches.get(target)
        if w is None:
            return None
        w.last_used = self._clock.now()
        res = w.resolution
        if res is not None and res.stale:
            self._check_staleness(res)
        return res

    def _check_staleness(self, res: Resolution) -> None:
        bound = self.options.max_staleness
        age = self._clock.now() - res.updated_at
        if bound is not None and age > bound:
            raise DiscoveryError(
                f"endpoints of {str(res.target)!r} from {self.describe()} are {age:.0f}s stale, "
                f"beyond MESH_DISCOVERY_MAX_STALENESS={bound:g}s (Consul has not answered)"
            )

    async def resolve(self, target: Target) -> Resolution | None:
        res = self.lookup(target)
        if res is not None:
            return res
        fut = self._ensure(target)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.options.first_timeout)
        except TimeoutError:
            raise self._first_timeout(target) from None

    def resolve_sync(self, target: Target) -> Resolution | None:
        res = self.lookup(target)
        if res is not None:
            return res
        fut = self._ensure(target)
        try:
            return fut.result(timeout=self.options.first_timeout)
        except concurrent.futures.TimeoutError:
            raise self._first_timeout(target) from None

    def _first_timeout(self, target: Target) -> DiscoveryError:
        w = self._watches.get(target)
        why = f": {w.last_error}" if w is not None and w.last_error else ""
        return DiscoveryError(
            f"Consul at {self.settings.address} gave no answer for service {str(target)!r} "
            f"within {self.options.first_timeout:g}s{why}. Check CONSUL_HTTP_ADDR and that the "
            "agent is running."
        )

    def describe(self) -> str:
        which = "passing or warning" if self.options.include_warning else "passing"
        return f"consul at {self.settings.address} ({which} instances)"

    # -- watches -----------------------------------------------------------------------------

    def _ensure(self, target: Target) -> concurrent.futures.Future[Resolution]:
        for part, what in ((target.service, "service"), (target.tag, "tag"), (target.dc, "dc")):
            if part is not None and not valid_service_name(part):
                raise DiscoveryError(
                    f"{what} {part!r} is not a valid Consul name: use letters, digits and '-', "
                    "starting with a letter or digit, at most 63 characters"
                )
        with self._lock:
            if self._closed:
                raise DiscoveryError("this ConsulDiscovery is closed")
            w = self._watches.get(target)
            if w is not None:
                return w.first
            w = _Watch(target=target, last_used=self._clock.now())
            self._watches[target] = w
            loop = self._start_loop()
        loop.call_soon_threadsafe(self._spawn, w)
        return w.first

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="meshlib-consul-watch", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        return loop

    def _spawn(self, w: _Watch) -> None:
        if self._consul is None:
            # Each query has a total deadline (``_deadline``); httpx's per-read timeout only
            # backs it up, so it sits just past it.
            opts = self.options
            self._consul = async_consul(
                self.settings,
                timeout=self._deadline(True) + 1.0,
                stale=opts.stale,
                max_response_bytes=opts.max_response_bytes,
                max_watches=opts.max_watches,
            )
        w.task = asyncio.get_running_loop().create_task(self._watch(w))

    def _deadline(self, blocking: bool) -> float:
        """Total time one query may take: Consul answers a blocking query within wait + wait/16
        (its jitter); past that plus a margin the agent, or something between, is not
        answering, however many bytes trickle in."""
        opts = self.options
        return (opts.wait * 17 / 16 if blocking else 0.0) + opts.query_margin

    def _claim_slot(self, w: _Watch) -> bool:
        """True if ``w`` may park blocking queries (at most ``max_watches`` at once)."""
        with self._lock:
            if not w.blocking and len(self._blocking) < self.options.max_watches:
                self._blocking.add(w.target)
                w.blocking = True
            warn = not w.blocking and not self._warned_polling
            if warn:
                self._warned_polling = True
        if warn:
            log.warning(
                "more than MESH_CONSUL_MAX_WATCHES=%d services are watched: %s and any further "
                "ones are polled every %gs with non-blocking queries (Consul limits connections "
                "per client address, 200 by default)",
                self.options.max_watches,
                w.target,
                self.options.poll_interval,
                extra={"service": str(w.target)},
            )
        return w.blocking

    def _release_slot(self, w: _Watch) -> None:
        with self._lock:
            if w.blocking:
                self._blocking.discard(w.target)
                w.blocking = False

    async def _watch(self, w: _Watch) -> None:
        try:
            await self._watch_loop(w)
        finally:
            self._release_slot(w)

    async def _watch_loop(self, w: _Watch) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        backoff = opts.error_backoff_min
        quick_retry = True
        target = w.target
        while not self._closed:
            started = loop.time()
            blocking = self._claim_slot(w)
            deadline = self._deadline(blocking and bool(w.index))
            try:
                params: dict[str, Any] = {
                    "passing": not opts.include_warning,
                    "tag": target.tag,
                    "dc": target.dc,
                    "near": opts.near,
                }
                if w.index and blocking:
                    params.update(index=w.index, wait=f"{int(opts.wait)}s")
                index, data = await asyncio.wait_for(
                    self._consul.health.service(target.service, **params), deadline
                )
                parsed = parse_health_entries(
                    data,
                    include_warning=opts.include_warning,
                    allow_link_local=opts.allow_link_local,
                )
            except asyncio.CancelledError:
                raise
            except consul.ACLPermissionDenied:
                if self._failed(w, "permission denied (403): check the ACL token's service:read"):
                    return
                log.error(
                    "Consul at %s refused to list %s: permission denied (403); retrying in %gs",
                    self.settings.address,
                    target,
                    opts.forbidden_backoff,
                    extra={"service": str(target)},
                )
                await asyncio.sleep(opts.forbidden_backoff)
                continue
            except Exception as exc:  # any failure keeps the last good set
                if quick_retry and isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
                    # A keep-alive connection the agent had already closed: ask again at once
                    # on a new one before calling it a failure.
                    quick_retry = False
                    continue
                if isinstance(exc, TimeoutError):
                    why = (
                        f"no complete answer within {deadline:g}s (the query's deadline: "
                        f"wait x 17/16 + {opts.query_margin:g}s); Consul, or something between, "
                        "is too slow"
                    )
                else:
                    why = f"{type(exc).__name__}: {foreign(exc)}"
                if self._failed(w, why):
                    return
                await asyncio.sleep(backoff / 2 + self._rng.uniform(0, backoff / 2))
                backoff = min(opts.error_backoff_max, backoff * 2)
                continue
            backoff = opts.error_backoff_min
            quick_retry = True
            new_index = int(index) if str(index).isascii() and str(index).isdigit() else 0
            w.index = max(1, new_index) if new_index >= w.index else 0
            if not blocking:
                w.index = 0
            if parsed.rejected_count and not parsed.endpoints:
                if self._rejected(w, parsed):
                    return
            else:
                self._good(w, parsed)
            if self._clock.now() - w.last_used > opts.idle_timeout:
                with self._lock:
                    self._watches.pop(target, None)
                log.info("stopped watching idle service %s", target, extra={"service": str(target)})
                return
            interval = opts.min_interval if blocking else opts.poll_interval
            pause = interval - (loop.time() - started)
            if pause > 0:
                await asyncio.sleep(pause)

    def _count_invalid(self, w: _Watch, parsed: ParsedEntries) -> None:
        w.invalid_entries = parsed.rejected_count
        w.invalid_entries_total += parsed.rejected_count

    def _rejected(self, w: _Watch, parsed: ParsedEntries) -> bool:
        """Every entry of the answer is invalid: refuse the whole update, as Envoy rejects a
        bad config update and keeps serving the last good one. The set is kept, marked stale,
        and the next query blocks at the new index until the registry changes again.

        True when the watch must stop (it had no good answer yet)."""
        self._count_invalid(w, parsed)
        w.rejected_updates += 1
        reasons = "; ".join(parsed.rejected)
        why = foreign(
            f"rejected an answer whose {parsed.rejected_count} entries are all invalid: {reasons}"
        )
        old = w.resolution
        log.warning(
            "Consul answered %s with only invalid entries; %s: %s",
            w.target,
            "keeping the last good endpoints" if old is not None else "no endpoints yet",
            why,
            extra={"service": str(w.target)},
        )
        w.last_error = why
        if old is not None and not old.stale:
            w.resolution = self._stale_copy(w, old)
        if not w.first.done():
            return self._fail_first(w, why)
        return False

    def _stale_copy(self, w: _Watch, old: Resolution) -> Resolution:
        return Resolution(
            target=old.target,
            endpoints=old.endpoints,
            source=old.source,
            updated_at=w.last_good,
            stale=True,
        )

    def _good(self, w: _Watch, parsed: ParsedEntries) -> None:
        now = self._clock.now()
        endpoints = parsed.endpoints
        old = w.resolution
        recovered = old is not None and old.stale
        self._count_invalid(w, parsed)
        if parsed.rejected_count:
            # Every answer that carries invalid entries says so, not only when the valid set
            # changes: a registry that keeps serving garbage stays visible.
            log.warning(
                "Consul returned %d invalid entries for %s (skipped): %s",
                parsed.rejected_count,
                w.target,
                "; ".join(parsed.rejected),
                extra={"service": str(w.target)},
            )
        w.last_good = now
        if old is None or old.stale or old.endpoints != endpoints:
            w.resolution = Resolution(
                target=w.target, endpoints=endpoints, source=self.describe(), updated_at=now
            )
        # Same endpoints: the snapshot (and its identity) is kept, so the router does nothing.
        w.errors = 0
        w.last_error = ""
        if recovered:
            log.info("Consul answers again for %s", w.target, extra={"service": str(w.target)})
        if not w.first.done():
            assert w.resolution is not None
            w.first.set_result(w.resolution)

    def _failed(self, w: _Watch, why: str) -> bool:
        """Record a failure; True when the watch must stop (its first answer failed)."""
        w.errors += 1
        # The next query must answer at once, so recovery is seen at once (a blocking query
        # at the old index would wait out its whole `wait` if nothing changed meanwhile).
        w.index = 0
        why = foreign(why)
        w.last_error = why
        old = w.resolution
        if old is not None and not old.stale:
            w.resolution = self._stale_copy(w, old)
            log.warning(
                "Consul at %s failed for %s (%s); serving the last known endpoints",
                self.settings.address,
                w.target,
                why,
                extra={"service": str(w.target)},
            )
        if not w.first.done():
            return self._fail_first(w, why)
        return False

    def _fail_first(self, w: _Watch, why: str) -> bool:
        w.first.set_exception(
            DiscoveryError(
                f"Consul at {self.settings.address} could not list service {str(w.target)!r}: {why}"
            )
        )
        # Let the next use start over (and wait again) instead of failing forever.
        with self._lock:
            if self._watches.get(w.target) is w:
                del self._watches[w.target]
        return True

    def watch_state(self) -> dict[str, dict[str, Any]]:
        """Per watched service (for ``mesh_state()``): index, consecutive errors, last error
        (capped and escaped), staleness, ``mode`` (``blocking``, or ``polling`` past
        ``max_watches``), invalid entries in the last answer and in all, and answers rejected
        because every entry was invalid."""
        now = self._clock.now()
        out: dict[str, dict[str, Any]] = {}
        for target, w in list(self._watches.items()):
            res = w.resolution
            out[str(target)] = {
                "index": w.index,
                "errors": w.errors,
                "last_error": w.last_error,
                "staleness_s": round(now - res.updated_at, 3) if res and res.stale else 0.0,
                "mode": "blocking" if w.blocking else "polling",
                "invalid_entries": w.invalid_entries,
                "invalid_entries_total": w.invalid_entries_total,
                "rejected_updates": w.rejected_updates,
            }
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is None:
            return

        async def shutdown() -> None:
            for w in list(self._watches.values()):
                if w.task is not None:
                    w.task.cancel()
            tasks = [w.task for w in self._watches.values() if w.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._consul is not None:
                await self._consul.http.close()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
