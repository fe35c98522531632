"""Consul discovery chains: one blocking-query watch of ``/v1/discovery-chain/<service>`` each.

A service's chain is watched from its first use, beside its health watch and by the same
rules: ``index``/``wait`` blocking queries on the watch loop's thread, the index reset when it
goes backwards, wake-ups rate-limited, errors backed off with jitter, and **the last good chain
kept** through an outage or a malformed answer (so a Consul restart never drops a canary
split). A change is applied as soon as the blocking query returns (well within 100 ms). Chain
watches share the ``max_watches`` blocking slots with health watches; past it they poll. A
chain watch stops when its service's health watch stops (idle), and starts again on next use.

``meshlib.traffic.chain.parse_chain`` reads the answer; what meshlib cannot honour in it is
logged once per distinct problem, counted, and shown in ``mesh_state()`` (``traffic``), and
the rest of the chain is applied. The first use waits for the first answer at most
``first_timeout``; without one the service is used as it is until the chain arrives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshlib.consul.parse import foreign
from meshlib.consul.settings import ConsulOptions
from meshlib.consul.watches import WatchSlots
from meshlib.discovery.base import Target
from meshlib.traffic.chain import Chain, parse_chain

__all__ = ["ChainLookups", "ChainWatch", "ChainWatches"]

log = logging.getLogger("meshlib.traffic")


@dataclass
class ChainWatch:
    """One service's chain watch (``target`` keys its blocking slot)."""

    service: str
    target: Target
    first: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)
    chain: Chain | None = None
    index: int = 0
    errors: int = 0
    last_error: str = ""
    updates: int = 0
    task: asyncio.Task[None] | None = None
    blocking: bool = False
    logged: set[str] = field(default_factory=set)
    unsupported_total: int = 0

    def state(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "errors": self.errors,
            "last_error": self.last_error,
            "updates": self.updates,
            "unsupported": len(self.chain.problems) if self.chain is not None else 0,
            "unsupported_total": self.unsupported_total,
            "mode": "blocking" if self.blocking else "polling",
        }


class ChainWatches:
    """The chain half of ``ConsulDiscovery``; it runs on the discovery's watch loop."""

    def __init__(
        self,
        options: ConsulOptions,
        slots: WatchSlots,
        address: str,
        rng: Any,
        in_use: Callable[[str], bool] = lambda service: True,
    ) -> None:
        self.options = options
        self.slots = slots
        self.address = address
        self.rng = rng
        self.in_use = in_use
        """False once the service's health watch has stopped (idle): its chain watch stops."""
        self.watches: dict[str, ChainWatch] = {}
        self.closed = False

    def chain(self, target: Target) -> Chain | None:
        if target.tag is not None or target.dc is not None or target.subset is not None:
            return None  # Consul DNS forms and chain targets are used as they are
        w = self.watches.get(target.service)
        return w.chain if w is not None else None

    def ensure(self, service: str, on_loop: Callable[..., None], client: Any) -> ChainWatch:
        """The watch of ``service``'s chain, started through ``on_loop`` (which runs it on the
        discovery's watch loop, outside every caller's context) on first use."""
        w = self.watches.get(service)
        if w is None:
            w = self.watches[service] = ChainWatch(service, Target(service, subset="(chain)"))
            on_loop(self._spawn, w, client)
        return w

    def _spawn(self, w: ChainWatch, client: Any) -> None:
        w.task = asyncio.get_running_loop().create_task(self._run(w, client()))

    async def _run(self, w: ChainWatch, api: Any) -> None:
        try:
            await self._loop(w, api)
        finally:
            self.slots.release(w)  # type: ignore[arg-type]
            if not w.first.done():
                w.first.set_result(None)

    async def _loop(self, w: ChainWatch, api: Any) -> None:
        from consul.callback import CB  # py-consul is loaded with the client that runs this

        opts = self.options
        loop = asyncio.get_running_loop()
        backoff = opts.error_backoff_min
        while not self.closed:
            started = loop.time()
            self.slots.claim(w)  # type: ignore[arg-type]
            blocking = w.blocking
            params: list[tuple[str, Any]] = []
            if w.index and blocking:
                params += [("index", w.index), ("wait", f"{int(opts.wait)}s")]
            try:
                index, data = await asyncio.wait_for(
                    api.http.get(
                        CB.json(index=True), f"/v1/discovery-chain/{w.service}", params=params
                    ),
                    opts.deadline(blocking and bool(w.index)),
                )
                chain = parse_chain(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure keeps the last good chain
                if self.closed:
                    return
                self._failed(w, exc)
                await asyncio.sleep(backoff / 2 + self.rng.uniform(0, backoff / 2))
                backoff = min(opts.error_backoff_max, backoff * 2)
                continue
            backoff = opts.error_backoff_min
            new_index = int(index) if str(index).isdigit() else 0
            w.index = (max(1, new_index) if new_index >= w.index else 0) if blocking else 0
            self._good(w, chain)
            if not self.in_use(w.service):
                # The service went idle (its health watch stopped): so does its chain watch;
                # the next use starts both again.
                if self.watches.get(w.service) is w:
                    del self.watches[w.service]
                return
            interval = opts.min_interval if blocking else opts.poll_interval
            pause = interval - (loop.time() - started)
            if pause > 0:
                await asyncio.sleep(pause)

    def _good(self, w: ChainWatch, chain: Chain | None) -> None:
        w.errors, w.last_error = 0, ""
        try:
            self._apply(w, chain)
        finally:
            # Only now: the first caller, on another thread, reads ``w.chain`` as it wakes.
            if not w.first.done():
                w.first.set_result(None)

    def _apply(self, w: ChainWatch, chain: Chain | None) -> None:
        old = w.chain
        if old is not None and chain is not None and old.describe() == chain.describe():
            return  # the same chain: keep the object, so the router's caches stay valid
        w.chain = chain
        if old is not None or chain is not None:
            w.updates += 1
            log.info(
                "service %s: discovery chain %s",
                w.service,
                "applied" if chain is not None else "removed (no config entries apply)",
                extra={"service": w.service},
            )
        for problem in chain.problems if chain is not None else ():
            if problem not in w.logged:
                w.logged.add(problem)
                w.unsupported_total += 1
                log.warning(
                    "service %s: discovery chain: %s",
                    w.service,
                    foreign(problem),
                    extra={"service": w.service, "outcome": "unsupported"},
                )

    def _failed(self, w: ChainWatch, exc: Exception) -> None:
        w.errors += 1
        w.index = 0
        from consul import ACLPermissionDenied

        if isinstance(exc, ACLPermissionDenied):
            why = "permission denied (403): check the ACL token's service:read"
        elif isinstance(exc, TimeoutError):
            why = "no complete answer within the query's deadline"
        else:
            why = f"{type(exc).__name__}: {foreign(exc)}"
        w.last_error = why
        if w.errors == 1:
            log.warning(
                "Consul at %s failed to give the discovery chain of %s (%s); %s",
                self.address,
                w.service,
                why,
                "keeping the last good chain" if w.chain is not None else "none applies yet",
                extra={"service": w.service},
            )
        if w.errors >= 2 and not w.first.done():
            w.first.set_result(None)  # stop holding the first call; keep trying behind it

    def state(self) -> dict[str, Any]:
        return {service: w.state() for service, w in list(self.watches.items())}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [w.task for w in self.watches.values() if w.task is not None]


class ChainLookups:
    """``Discovery``'s chain methods for ``ConsulDiscovery`` (which provides the attributes)."""

    _chains: ChainWatches
    options: ConsulOptions

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError  # ConsulDiscovery's: runs fn on its watch loop

    def _client(self) -> Any:
        raise NotImplementedError

    def chain(self, target: Target) -> Chain | None:
        return self._chains.chain(target)

    def _chain_first(self, target: Target) -> concurrent.futures.Future[None] | None:
        if target.tag is not None or target.dc is not None or target.subset is not None:
            return None
        if self._chains.closed:
            return None
        return self._chains.ensure(target.service, self._on_loop, self._client).first

    async def resolve_chain(self, target: Target) -> Chain | None:
        fut = self._chain_first(target)
        if fut is not None and not fut.done():
            # Without an answer in time the service is used as it is until the chain arrives.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wrap_future(fut), self.options.first_timeout)
        return self.chain(target)

    def resolve_chain_sync(self, target: Target) -> Chain | None:
        fut = self._chain_first(target)
        if fut is not None and not fut.done():
            with contextlib.suppress(concurrent.futures.TimeoutError):
                fut.result(timeout=self.options.first_timeout)
        return self.chain(target)

    def traffic_state(self) -> dict[str, Any]:
        """Per service with a chain watch: index, errors, updates, unsupported features."""
        return self._chains.state()
