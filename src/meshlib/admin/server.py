"""The admin endpoint: a small local HTTP server that shows operators what the mesh knows.

An in-process mesh has no sidecar to ask, so the process itself answers, like Finagle's and
Linkerd 1's admin port: ``GET /mesh/state`` (the ``mesh_state()`` JSON), ``GET /mesh/metrics``
(Prometheus text) and ``GET /`` (a live dashboard, one inline HTML page). It is opt-in and
loopback-only by default, because it reveals the service topology; a non-loopback address is
refused unless a token is configured, and with a token every request must carry it. The server
is stdlib asyncio (one request per connection, no dependencies), so it can run in the
application's own event loop (``start_admin``) or on a thread for synchronous programs
(``AdminServer``). Usage, the security model and the metrics list are in docs/admin.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from meshlib.admin.http import MAX_HEAD, AdminApp, is_ip, is_loopback, serve_connection
from meshlib.config import MeshConfig
from meshlib.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN_ADDR",
    "AdminHandle",
    "AdminServer",
    "MeshStateSource",
    "merged_state",
    "parse_admin_addr",
    "serve_admin_from_config",
    "start_admin",
    "start_admin_from_config",
]

log = logging.getLogger("meshlib.admin")

DEFAULT_ADMIN_ADDR = "127.0.0.1:9990"
"""Linkerd 1's admin port, on loopback."""


@runtime_checkable
class MeshStateSource(Protocol):
    """Anything the admin endpoint can show: clients, transports, pipelines, and the inbound
    middlewares (their ``mesh_state()`` has no services and an ``inbound`` section)."""

    def mesh_state(self) -> dict[str, Any]: ...


Sources = MeshStateSource | Sequence[MeshStateSource]


def _as_list(sources: Sources) -> list[MeshStateSource]:
    items = [sources] if isinstance(sources, MeshStateSource) else list(sources)
    if not items:
        raise ValueError("the admin endpoint needs at least one client or transport to show")
    return items


def merged_state(sources: Sources) -> dict[str, Any]:
    """One ``mesh_state()``-shaped document for several clients (and inbound middlewares).

    With one source it is exactly that source's ``mesh_state()``. With several, services are
    merged by name; when two clients use the same service, the later one is shown as
    ``name#2`` (``#3``...) rather than hiding one client's view of it.
    """
    items = _as_list(sources)
    if len(items) == 1:
        return items[0].mesh_state()
    services: dict[str, Any] = {}
    traffic: dict[str, Any] = {}
    merged: dict[str, Any] = {"services": services, "traffic": traffic}
    for source in items:
        state = source.mesh_state()
        for part, into in (("services", services), ("traffic", traffic)):
            for name, value in (state.get(part) or {}).items():
                key, n = name, 2
                while key in into:
                    key, n = f"{name}#{n}", n + 1
                into[key] = value
        if "connect" in state:  # one identity per process: every client shares it
            merged["connect"] = state["connect"]
        if "inbound" in state:  # an inbound middleware's admission (one per middleware)
            key, n = "inbound", 2
            while key in merged:
                key, n = f"inbound#{n}", n + 1
            merged[key] = state["inbound"]
    return merged


def parse_admin_addr(addr: str, token: str | None = None) -> tuple[str, int]:
    """``(host, port)`` from ``127.0.0.1:9990``, ``:9990``, ``[::1]:9990`` or ``localhost:9990``.

    A bare ``:port`` (or ``port``) means 127.0.0.1. A non-loopback host is refused without a
    token: the endpoint reveals every service, endpoint and latency the process knows, and
    anyone who can reach the port could read it.
    """
    text = addr.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    host = host.strip() or "127.0.0.1"
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535 or (":" in host and not (bracketed and is_ip(host))):
        raise ConfigError(
            f"MESH_ADMIN_ADDR={addr!r} is not an address; use host:port, e.g. 127.0.0.1:9990, "
            "[::1]:9990 or :9990 (127.0.0.1)"
        )
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"MESH_ADMIN_ADDR={addr!r} is not a loopback address, and the admin endpoint "
            "reveals every service, endpoint and latency this process knows; set "
            "MESH_ADMIN_TOKEN to require a bearer token, or bind 127.0.0.1"
        )
    return host, port


class AdminHandle:
    """A running admin server in the current event loop; ``aclose()`` stops it."""

    def __init__(self, app: AdminApp, host: str) -> None:
        self._app = app
        self._host = host
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._port = 0

    async def _start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, port, limit=MAX_HEAD)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await serve_connection(self._app, reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the kernel's choice when the address asked for port 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def aclose(self) -> None:
        """Stop listening and end the connections still open (a dashboard's poll, say)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def start_admin(
    sources: Sources, *, addr: str = DEFAULT_ADMIN_ADDR, token: str | None = None
) -> AdminHandle:
    """Serve the admin endpoint in the running event loop (async applications).

    ``sources`` is a client, a transport, or a list of them (their services are merged).
    Raises ``ConfigError`` for a bad or non-loopback-without-token address, ``OSError`` if the
    port is taken.
    """
    host, port = parse_admin_addr(addr, token)
    items = _as_list(sources)
    handle = AdminHandle(AdminApp(lambda: merged_state(items), token), host)
    await handle._start(port)
    if not is_loopback(host):
        log.warning("meshlib admin on %s is plain HTTP: the token crosses the network", host)
    log.info("meshlib admin listening on %s (token required: %s)", handle.url, bool(token))
    return handle


class AdminServer:
    """The admin endpoint on a daemon thread with its own event loop (synchronous programs).

    Use ``start()``/``stop()`` or ``with AdminServer(client, addr=":9990"):``. An async client
    should be served with ``start_admin`` in its own loop instead: its state is only read
    consistently from the loop that changes it.
    """

    def __init__(
        self,
        sources: Sources,
        *,
        addr: str = DEFAULT_ADMIN_ADDR,
        token: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        parse_admin_addr(addr, token)  # refuse a bad address before any thread exists
        self._sources = _as_list(sources)
        self._addr = addr
        self._token = token
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._handle: AdminHandle | None = None
        self._error: BaseException | None = None

    def start(self) -> Self:
        """Bind and serve; returns once the port is open (raises if it could not be)."""
        if self._thread is not None:
            raise RuntimeError("admin server already started")
        self._thread = threading.Thread(target=self._run, name="meshlib-admin", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError(f"admin server did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._start_timeout)
            self._thread = None
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start(): a thread has nowhere else to report
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._handle = await start_admin(self._sources, addr=self._addr, token=self._token)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._handle.aclose()

    @property
    def port(self) -> int:
        if self._handle is None:
            raise RuntimeError("admin server not started")
        return self._handle.port

    @property
    def url(self) -> str:
        if self._handle is None:
            raise RuntimeError("admin server not started")
        return self._handle.url

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended by itself
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(self._start_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_admin_from_config(
    sources: Sources, config: MeshConfig | None = None
) -> AdminServer | None:
    """Start an ``AdminServer`` thread if ``MESH_ADMIN_ADDR`` is set; None when it is not."""
    config = config if config is not None else MeshConfig.from_env()
    if not config.admin_addr:
        return None
    return AdminServer(sources, addr=config.admin_addr, token=config.admin_token).start()


async def start_admin_from_config(
    sources: Sources, config: MeshConfig | None = None
) -> AdminHandle | None:
    """``start_admin`` in the running loop if ``MESH_ADMIN_ADDR`` is set; None when it is not."""
    config = config if config is not None else MeshConfig.from_env()
    if not config.admin_addr:
        return None
    return await start_admin(sources, addr=config.admin_addr, token=config.admin_token)
