"""A fault-injection TCP proxy in the style of toxiproxy, for meshlib's resilience tests.

Resilience code must be tested against what sockets really do when the network misbehaves: a
slow first byte, a reset halfway through a body, a listener that refuses, a peer that never
answers. ``FaultProxy`` listens on loopback, forwards every connection to one upstream
``host:port`` and applies toxics (see ``toxics``) that can be added and removed while
connections are open, as toxiproxy does. It runs either inside the current event loop
(``async with FaultProxy(...)``) or on its own loop in a background thread (``with
FaultProxy(...)``), because meshlib has both async and sync clients to test.

``refuse()`` closes the listener so connects fail with ECONNREFUSED, and ``restore()`` listens on
the same port again: the way a crashed or restarting instance looks to a client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

from meshlib.testing.faultproxy.link import Link
from meshlib.testing.faultproxy.toxics import (
    Bandwidth,
    Direction,
    Latency,
    LimitData,
    ResetAfterBytes,
    ResetPeer,
    SlowClose,
    Timeout,
    Toxic,
    bandwidth,
    latency,
    limit_data,
    reset_after_bytes,
    reset_peer,
    slow_close,
    timeout,
)

__all__ = [
    "Bandwidth",
    "Direction",
    "FaultProxy",
    "Latency",
    "LimitData",
    "ProxyStats",
    "ResetAfterBytes",
    "ResetPeer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "bandwidth",
    "latency",
    "limit_data",
    "reset_after_bytes",
    "reset_peer",
    "slow_close",
    "timeout",
]

_T = TypeVar("_T")
_TOXIC_TYPES = (Latency, Bandwidth, Timeout, ResetPeer, LimitData, ResetAfterBytes, SlowClose)


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since start; bytes are those delivered after toxics, per direction."""

    accepted: int
    open: int
    bytes_upstream: int
    bytes_downstream: int
    listening: bool


class FaultProxy:
    """A loopback TCP proxy to ``upstream`` whose toxics change at runtime.

    ``add``/``remove``/``clear``/``refuse``/``restore``/``stats`` are plain methods that may be
    called from any thread: in background-thread mode they are run on the proxy's loop and waited
    for. Randomness (jitter, toxicity) comes from ``rng`` so tests can seed it.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        listen_port: int = 0,
        *,
        listen_host: str = "127.0.0.1",
        rng: random.Random | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self.listen_host = listen_host
        self.rng = rng if rng is not None else random.Random()
        self.connect_timeout = connect_timeout
        self._port = listen_port
        self._toxics: dict[str, Toxic] = {}
        self._links: set[Link] = set()
        self._server: asyncio.Server | None = None
        self._listening = False
        self._generation = 0  # bumped by refuse/aclose so a restore still starting stands down
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        self._accepted = self._bytes_up = self._bytes_down = 0
        self._serving: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # lifecycle: async

    async def start(self) -> Self:
        """Listen and serve in the running loop; returns ``self``."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._listening = True
        await self._serve(self._bind(), self._generation)
        return self

    async def aclose(self) -> None:
        """Stop listening and abort every proxied connection."""
        if self._loop is None:
            return
        self._stop_listening()
        for task in list(self._serving):
            await task
        for link in list(self._links):
            link.close("abort")
        for _ in range(3):  # let aborted transports finish connection_lost
            await asyncio.sleep(0)
        self._loop = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # lifecycle: background thread

    def start_background(self, timeout: float = 10.0) -> Self:
        """Run the proxy on its own event loop in a daemon thread (for synchronous tests)."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def body() -> None:
            self._stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            try:
                await self._stop.wait()
            finally:
                await self.aclose()

        self._thread = threading.Thread(target=asyncio.run, args=(body(),), daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop a proxy started with ``start_background`` and join its thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start_background()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # addressing and counters

    @property
    def port(self) -> int:
        return self._port

    @property
    def addr(self) -> str:
        """``"127.0.0.1:PORT"``, ready for an endpoint list."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                self._accepted,
                len(self._links),
                self._bytes_up,
                self._bytes_down,
                self._listening,
            )

    def _count(self, direction: Direction, n: int) -> None:
        with self._lock:
            if direction == "upstream":
                self._bytes_up += n
            else:
                self._bytes_down += n

    # toxics

    def toxics(self) -> dict[str, Toxic]:
        return dict(self._toxics)

    def add(self, toxic: Toxic, name: str | None = None) -> str:
        """Apply ``toxic`` to new and open connections; returns its name (kind_direction)."""
        if not isinstance(toxic, _TOXIC_TYPES):
            raise TypeError(f"not a toxic: {toxic!r}")

        def apply() -> str:
            chosen = name or f"{toxic.kind}_{toxic.direction}"
            if name is None:
                n = 2
                while chosen in self._toxics:
                    chosen, n = f"{toxic.kind}_{toxic.direction}_{n}", n + 1
            elif name in self._toxics:
                raise ValueError(f"a toxic named {name!r} already exists")
            self._toxics = {**self._toxics, chosen: toxic}
            self._notify()
            return chosen

        return self._call(apply)

    def remove(self, name: str) -> None:
        def apply() -> None:
            if name not in self._toxics:
                raise KeyError(name)
            self._toxics = {n: t for n, t in self._toxics.items() if n != name}
            self._notify()

        self._call(apply)

    def clear(self) -> None:
        def apply() -> None:
            self._toxics = {}
            self._notify()

        self._call(apply)

    # refusing connections

    def refuse(self, *, drop_existing: bool = False) -> None:
        """Close the listener so new connects are refused; optionally reset open connections too.

        Called on the proxy's own loop, the resets reach the peers on the loop's next turn.
        """

        def apply() -> None:
            self._stop_listening()
            if drop_existing:
                for link in list(self._links):
                    link.close("rst")

        self._call(apply)

    def restore(self) -> None:
        """Listen again on the same port. Connects succeed (into the backlog) once this returns."""

        def apply() -> None:
            if self._listening:
                return
            sock = self._bind()
            self._listening = True
            task = asyncio.get_running_loop().create_task(self._serve(sock, self._generation))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

        self._call(apply)

    # internals

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the proxy's loop and wait for it (directly when already on that loop).

        From another thread the answer is released one loop turn later, after the callbacks
        ``fn`` scheduled (aborted transports really closing their sockets) have run.
        """
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return fn()
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                value = fn()
            except Exception as exc:
                result.set_exception(exc)
            else:
                loop.call_soon(result.set_result, value)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=10.0)

    def _notify(self) -> None:
        for link in list(self._links):
            link.toxics_changed()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, self._port))
            sock.listen(256)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])
        return sock

    async def _serve(self, sock: socket.socket, generation: int) -> None:
        server = await asyncio.start_server(self._accept, sock=sock)
        if generation != self._generation:  # refused or closed while this was starting
            server.close()
        else:
            self._server = server

    def _stop_listening(self) -> None:
        self._generation += 1
        self._listening = False
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(
            reader,
            writer,
            upstream=self.upstream,
            connect_timeout=self.connect_timeout,
            rng=self.rng,
            toxics=lambda: self._toxics,
            on_bytes=self._count,
            on_closed=self._link_closed,
        )
        with self._lock:
            self._accepted += 1
            self._links.add(link)
        await link.run()

    def _link_closed(self, link: Link) -> None:
        with self._lock:
            self._links.discard(link)
