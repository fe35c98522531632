"""This service's Connect certificates, kept current from the local agent in memory.

A ``CertificateWatcher`` holds blocking queries on the agent's CA roots and on this service's
leaf certificate, on a private event-loop thread, as Consul's own Go SDK does
(``connect.NewService``). The agent renews the leaf before it expires and re-issues it when the
roots rotate; each new answer becomes a new ``Bundle`` and every subscriber (the client's TLS
context, the server's rotating context) gets it, so rotation needs no restart and drops no
request: connections already open keep the certificate they were set up with. On an error the
last good bundle is kept and the watch retries with jittered backoff; the first answer is
awaited for a bounded time and a failure says what the agent answered. Everything it asks the
agent (intention checks included) runs in ``otel.background_context()``, out of users' traces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from meshlib.connect.identity import SpiffeID, parse_spiffe_id
from meshlib.consul.connect import ConnectAgent, ConnectUnavailable, Leaf, Roots
from meshlib.consul.parse import foreign
from meshlib.otel.tracing import background_context

__all__ = ["Bundle", "CertificateWatcher"]

log = logging.getLogger("meshlib.connect")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bundle:
    """One consistent view: this service's leaf and the roots it chains to."""

    leaf: Leaf
    roots: Roots

    @property
    def identity(self) -> SpiffeID:
        sid = parse_spiffe_id(self.leaf.uri)
        if sid is None:
            raise ConnectUnavailable(f"the agent's leaf URI {self.leaf.uri!r} is not a service ID")
        return sid

    @property
    def trust_domain(self) -> str:
        return self.roots.trust_domain


def _in_background(
    coro: Awaitable[T], loop: asyncio.AbstractEventLoop
) -> concurrent.futures.Future[T]:
    """Run ``coro`` on ``loop`` in meshlib's background context, not the caller's: the agent's
    answers are nobody's request, so they must neither join the caller's trace (a certificate
    watch outlives any request) nor be traced by httpx instrumentation at all."""
    submit = asyncio.run_coroutine_threadsafe  # the task copies the context current here
    return background_context().run(submit, coro, loop)  # type: ignore[arg-type]


class CertificateWatcher:
    """Watches roots and leaf for ``service``; ``bundle`` is always the newest good pair."""

    def __init__(
        self,
        agent: ConnectAgent,
        service: str,
        *,
        first_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        min_interval: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self._agent = agent
        self.service = service
        self._first_timeout = first_timeout
        self._backoff = backoff
        self._min_interval = min_interval
        self._rng = rng or random.Random()
        self._leaf: Leaf | None = None
        self._roots: Roots | None = None
        self._bundle: Bundle | None = None
        self._subscribers: list[Callable[[Bundle], None]] = []
        self._lock = threading.Lock()
        self._first: concurrent.futures.Future[Bundle] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.errors = 0
        self.rotations = 0
        self.last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> Bundle | None:
        """Start watching; with ``wait``, wait for the first leaf and roots (at most
        ``first_timeout``) and raise ``ConnectUnavailable`` saying why if they do not come."""
        with self._lock:
            if self._thread is None:
                loop = self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=background_context().run,
                    args=(loop.run_forever,),
                    name="meshlib-connect-certs",
                    daemon=True,
                )
                self._thread.start()
                _in_background(self._spawn(), loop)
        if not wait:
            return self._bundle
        try:
            return self._first.result(timeout=self._first_timeout)
        except concurrent.futures.TimeoutError:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            raise ConnectUnavailable(
                f"no Connect certificate for {self.service!r} from the agent at "
                f"{self._agent.address} within {self._first_timeout:g}s{why}"
            ) from None

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._agent.aclose()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    # -- what users of the watcher read ------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        """The newest good leaf and roots (waits for the first, see ``start``)."""
        bundle = self._bundle
        if bundle is None:
            bundle = self.start()
            assert bundle is not None
        return bundle

    @property
    def pending(self) -> concurrent.futures.Future[Bundle] | None:
        """Until the first bundle arrives, the future that carries it; then None."""
        return None if self._bundle is not None else self._first

    @property
    def agent(self) -> ConnectAgent:
        return self._agent

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Run an agent call on the watcher's own loop (callers may have another, or none)."""
        if self._loop is None:
            self.start()
        assert self._loop is not None
        return _in_background(coro, self._loop)

    def subscribe(self, callback: Callable[[Bundle], None]) -> None:
        """``callback(bundle)`` on every change, from the watcher's thread."""
        self._subscribers.append(callback)

    # -- the watches -------------------------------------------------------------------------

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch(self._fetch_roots)),
            loop.create_task(self._watch(self._fetch_leaf)),
        ]

    async def _fetch_roots(self, index: int) -> int:
        roots = await self._agent.roots(index)
        if self._roots is None or roots.pems != self._roots.pems:
            self._roots = roots
            self._publish("roots")
        return roots.index

    async def _fetch_leaf(self, index: int) -> int:
        leaf = await self._agent.leaf(self.service, index)
        if self._leaf is None or leaf.serial != self._leaf.serial:
            self._leaf = leaf
            self._publish("leaf")
        return leaf.index

    async def _watch(self, fetch: Callable[[int], Awaitable[int]]) -> None:
        index, failures = 0, 0
        while True:
            try:
                new = await fetch(index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.errors += 1
                self.last_error = foreign(exc)
                if not self._first.done() and isinstance(exc, ConnectUnavailable):
                    self._first.set_exception(exc)
                low, high = self._backoff
                delay = min(high, low * 2 ** min(failures, 16))
                log.warning("Connect certificate watch failed (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(self._rng.uniform(delay / 2, delay))
                continue
            failures = 0
            if new == index:  # woke with nothing new (wait elapsed, or a chatty agent): pace it
                await asyncio.sleep(self._min_interval)
            index = new if new >= index else 0  # an index going backwards starts over

    def _publish(self, what: str) -> None:
        if self._leaf is None or self._roots is None:
            return
        first = self._bundle is None
        bundle = self._bundle = Bundle(self._leaf, self._roots)
        if first:
            if not self._first.done():
                self._first.set_result(bundle)
            log.info("Connect identity %s (serial %s)", self._leaf.uri, self._leaf.serial)
        else:
            self.rotations += 1
            log.info("Connect %s rotated (leaf serial %s)", what, self._leaf.serial)
        for callback in list(self._subscribers):
            try:
                callback(bundle)
            except Exception:  # one subscriber's bug must not stop rotation for the others
                log.exception("a Connect certificate subscriber failed")
