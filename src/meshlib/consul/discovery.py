"""Consul discovery: blocking-query watches per service, last known good kept through outages.

Each mesh service gets a watch on ``/v1/health/service/<name>`` (``passing`` by default,
``?stale`` by default; ``/v1/health/connect/<name>`` when Connect is on, which lists the
Connect-native instances and the sidecar proxies in front of the others) the first time it is
used, run by py-consul on meshlib's httpx client in a
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

import httpx

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.consul.chains import ChainLookups, ChainWatches
from meshlib.consul.loop import WatchLoop, keep, track
from meshlib.consul.parse import ParsedEntries, foreign, parse_health_entries
from meshlib.consul.settings import ConsulOptions, ConsulSettings
from meshlib.consul.watches import Watch as _Watch
from meshlib.consul.watches import WatchSlots, check_names, state_row
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
        self._runner = WatchLoop()
        self._consul: Any = None
        self._closed = False
        self._chains = self._fresh_watches()
        self._inherited: dict[Target, Resolution] = {}
        track(self)

    def forget_inherited(self) -> None:
        """In a forked child: drop the loop, client and watches; their endpoints seed new ones."""
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
        if self._closed:
            return  # nothing runs; lookups answer from the closed watches as in the parent
        old_loop, old_thread = self._runner.take()
        keep(old_loop, old_thread, self._consul, *self._watches.values(), self._chains)
        self._consul = None
        self._chains = self._fresh_watches()
        self._inherited = {t: w.resolution for t, w in self._watches.items() if w.resolution}
        self._watches = {}

    def _fresh_watches(self) -> ChainWatches:
        """New watch slots and the chain watches that share them (at start, and after fork)."""
        self._slots = WatchSlots(self.options.max_watches)
        chains = ChainWatches(self.options, self._slots, self.settings.address, self._rng)
        chains.in_use = lambda service: Target(service) in self._watches
        return chains

    # -- the request path --------------------------------------------------------------------

    def lookup(self, target: Target) -> Resolution | None:
        w = self._watches.get(target)
        if w is None:
            if target not in self._inherited:
                return None
            self._ensure(target)  # forked: watch again, serving what the parent knew meanwhile
            w = self._watches[target]
        w.last_used = self._clock.now()
        res = w.resolution
        if res is not None and res.stale:
            self._check_staleness(res)
        return res

    def current(self, target: Target) -> Resolution | None:
        w = self._watches.get(target)
        return None if w is None else w.resolution

    def _check_staleness(self, res: Resolution) -> None:
        bound = self.options.max_staleness
        age = self._clock.now() - res.updated_at
        if bound is not None and age > bound:
            raise DiscoveryError(
                f"endpoints of {str(res.target)!r} from {self.describe()} are {age:.0f}s stale, "
                f"beyond MESH_DISCOVERY_MAX_STALENESS={bound:g}s (Consul has not answered)"
            )

    async def resolve(self, target: Target) -> Resolution | None:
        import asyncio  # loaded: this runs on an event loop

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
        check_names(target)
        with self._lock:
            if self._closed:
                raise DiscoveryError("this ConsulDiscovery is closed")
            w = self._watches.get(target)
            if w is not None:
                return w.first
            w = _Watch(target=target, last_used=self._clock.now())
            seed = self._inherited.pop(target, None)
            if seed is not None:
                w.resolution = seed
                w.first.set_result(seed)
            self._watches[target] = w
            self._runner.call(self._spawn, w)
        return w.first

    def _on_loop(self, fn: Any, *args: Any) -> None:  # chains start their watches with it
        self._runner.call(fn, *args)

    def _client(self) -> Any:  # py-consul on httpx, made on the watch loop at first use
        if self._consul is None:
            # Imported here: py-consul (and the ``requests`` it imports) costs ``import
            # meshlib`` nothing until Consul discovery is first used.
            from meshlib.consul.http import async_consul

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

    async def _watch(self, w: _Watch) -> None:
        try:
            await self._watch_loop(w)
        finally:
            self._slots.release(w)

    async def _watch_loop(self, w: _Watch) -> None:
        import asyncio

        from consul import ACLPermissionDenied  # imported with py-consul by _spawn

        opts = self.options
        loop = asyncio.get_running_loop()
        backoff = opts.error_backoff_min
        quick_retry = True
        target = w.target
        while not self._closed:
            started = loop.time()
            blocking = self._slots.claim_or_poll(w, self.options.poll_interval)
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
                health = self._consul.health
                listing = health.connect if opts.uses_connect(target.service) else health.service
                index, data = await asyncio.wait_for(listing(target.service, **params), deadline)
                parsed = parse_health_entries(
                    data,
                    include_warning=opts.include_warning,
                    allow_link_local=opts.allow_link_local,
                )
            except asyncio.CancelledError:
                raise
            except ACLPermissionDenied:
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
        """Every entry of the answer is invalid: refused whole (``Watch.reject``). True when
        the watch must stop (it had no good answer yet)."""
        why = w.reject(parsed)
        return self._fail_first(w, why) if not w.first.done() else False

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
                target=w.target,
                endpoints=endpoints,
                source=self.describe(),
                updated_at=now,
                connect=self.options.uses_connect(w.target.service),
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
            loop, thread = self._runner.take()
        if loop is None:
            return

        import asyncio  # loaded: the loop it stops exists

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
