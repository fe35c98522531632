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
  (the service was deregistered) is applied, but an error, a timeout, a malformed body or an
  answer of only invalid entries (rejected whole, as Envoy rejects an update) never empties it;
* names are validated before any call and registry data before use (``consul_parse``); a
  query has a total deadline and a size cap; strings from Consul are capped and escaped;
* at most ``max_watches`` watches block at once (the rest poll); idle ones stop.
First use waits up to ``first_timeout``, then fails naming Consul's address (never its token);
each service's discovery chain is watched beside it (``chains``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
from typing import Any

import consul
import httpx

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.consul.chains import ChainLookups, ChainWatches
from meshlib.consul.http import async_consul
from meshlib.consul.parse import ParsedEntries, foreign, parse_health_entries, valid_service_name
from meshlib.consul.settings import ConsulSettings
from meshlib.consul.watches import ConsulOptions, WatchSlots, state_row
from meshlib.consul.watches import Watch as _Watch
from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.errors import DiscoveryError

__all__ = ["ConsulDiscovery", "ConsulOptions"]

log = logging.getLogger("meshlib.discovery")


class ConsulDiscovery(ChainLookups, Discovery):
    """Endpoints from Consul's health API and discovery chains, watched with blocking queries."""

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
        self._slots = WatchSlots(self.options.max_watches)
        self._chains = ChainWatches(self.options, self._slots, settings.address, self._rng)
        self._chains.in_use = lambda service: Target(service) in self._watches

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

    def _client(self) -> Any:  # py-consul on httpx, made on the watch loop at first use
        if self._consul is None:
            opts = self.options  # httpx's read timeout only backs up each query's deadline
            self._consul = async_consul(
                self.settings,
                timeout=opts.deadline(True) + 1.0,
                stale=opts.stale,
                max_response_bytes=opts.max_response_bytes,
                max_watches=opts.max_watches,
            )
        return self._consul

    def _spawn(self, w: _Watch) -> None:
        self._client()
        w.task = asyncio.get_running_loop().create_task(self._watch(w))

    def _claim_slot(self, w: _Watch) -> bool:
        """True if ``w`` may park blocking queries (at most ``max_watches`` at once)."""
        if self._slots.claim(w):
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

    async def _watch(self, w: _Watch) -> None:
        try:
            await self._watch_loop(w)
        finally:
            self._slots.release(w)

    async def _watch_loop(self, w: _Watch) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        backoff = opts.error_backoff_min
        quick_retry = True
        target = w.target
        while not self._closed:
            started = loop.time()
            blocking = self._claim_slot(w)
            deadline = self.options.deadline(blocking and bool(w.index))
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
                        f"no complete answer within {deadline:g}s (the query's total "
                        "deadline); Consul, or something between, is too slow"
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

    def _rejected(self, w: _Watch, parsed: ParsedEntries) -> bool:
        """Every entry of the answer is invalid: refuse the whole update, as Envoy rejects a
        bad config update and keeps serving the last good one. The set is kept, marked stale,
        and the next query blocks at the new index until the registry changes again.

        True when the watch must stop (it had no good answer yet)."""
        w.count_invalid(parsed.rejected_count)
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
            w.resolution = w.stale_copy(old)
        if not w.first.done():
            return self._fail_first(w, why)
        return False

    def _good(self, w: _Watch, parsed: ParsedEntries) -> None:
        now = self._clock.now()
        endpoints = parsed.endpoints
        old = w.resolution
        recovered = old is not None and old.stale
        w.count_invalid(parsed.rejected_count)
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
            w.resolution = w.stale_copy(old)
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
        """Per watched service, for ``mesh_state()`` (``watches.state_row`` says what)."""
        now = self._clock.now()
        return {str(target): state_row(w, now) for target, w in list(self._watches.items())}

    def close(self) -> None:
        with self._lock:
            self._closed = self._chains.closed = True
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is None:
            return

        async def shutdown() -> None:
            tasks = [w.task for w in self._watches.values() if w.task is not None]
            tasks += self._chains.tasks()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._consul is not None:
                await self._consul.http.close()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
