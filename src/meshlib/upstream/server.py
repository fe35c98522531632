"""Running an upstream in the current event loop (``Upstream``) or on its own thread
(``UpstreamThread``), each stopped by its owner."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from types import TracebackType
from typing import Self

from meshlib.upstream.behaviour import UpstreamBehaviour, UpstreamStats
from meshlib.upstream.core import Connection, Core

__all__ = ["Upstream", "UpstreamThread", "base_url"]


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Upstream:
    """An upstream server in the running event loop, for async tests and the in-process demo.

    ``port=0`` lets the kernel choose a free port, so parallel tests never collide; read the
    chosen one from ``.port``/``.url`` once started.
    """

    def __init__(
        self,
        behaviour: UpstreamBehaviour,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        history: int = 32,
    ) -> None:
        self._core = Core(behaviour, rng, history)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()

    async def start(self) -> Self:
        """Bind and start accepting; returns ``self`` so it chains."""
        if self._server is not None:
            raise RuntimeError("upstream already started")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Connection(self._core, self._connections),
            self._host,
            self._requested_port,
            backlog=1024,
        )
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._connections):
            conn.abort()
        await server.wait_closed()
        # Let the aborted transports run connection_lost so their sockets are really closed.
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("upstream not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``."""
        return base_url(self._host, self.port)

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self._core.behaviour

    def set_behaviour(self, behaviour: UpstreamBehaviour) -> None:
        """Swap the behaviour for requests that arrive from now on (thread-safe).

        A behaviour with a ``seed`` re-seeds the RNG, so the draws after the swap are reproducible.
        Requests already hanging stay hung: they were accepted under the old behaviour.
        """
        self._core.set_behaviour(behaviour)

    def stats(self) -> UpstreamStats:
        """A consistent snapshot of the counters (thread-safe)."""
        return self._core.stats()

    def reset_stats(self) -> None:
        self._core.reset_stats()


class UpstreamThread:
    """An ``Upstream`` on its own event loop in a daemon thread, for synchronous tests.

    ``set_behaviour``/``stats`` are safe to call from the test's thread; ``stop`` (or leaving the
    ``with`` block) shuts the loop down and joins the thread.
    """

    def __init__(
        self,
        behaviour: UpstreamBehaviour,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        history: int = 32,
        start_timeout: float = 10.0,
    ) -> None:
        self._upstream = Upstream(behaviour, host=host, port=port, rng=rng, history=history)
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("upstream thread already started")
        self._thread = threading.Thread(
            target=self._run, name=f"upstream-{self.behaviour.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError(f"upstream did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._start_timeout)
            raise RuntimeError("upstream failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start(); a thread has nowhere else to report
            self._error = self._error or exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self._upstream.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._upstream.stop()

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"upstream thread did not stop within {timeout} s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._upstream.host

    @property
    def port(self) -> int:
        return self._upstream.port

    @property
    def url(self) -> str:
        return self._upstream.url

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self._upstream.behaviour

    def set_behaviour(self, behaviour: UpstreamBehaviour) -> None:
        self._upstream.set_behaviour(behaviour)

    def stats(self) -> UpstreamStats:
        return self._upstream.stats()

    def reset_stats(self) -> None:
        self._upstream.reset_stats()
