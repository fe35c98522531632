"""``FakeConsul``: the server's lifecycle on a background event loop, its faults and probes.

The HTTP server runs on its own event loop in a daemon thread, so it serves sync clients
(``requests``, ``httpx.Client``) and async ones alike, from any test style; the state-arranging
half of the API lives in ``api.StateAPI``. Faults simulate what a mesh client must survive:
answers with an error status, a server that accepts but never answers, added latency, dropped
connections, a full outage on the same port, and an index that goes backwards. Probes
(``requests``, ``active_blocking_queries``) let tests synchronise without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar

from .api import StateAPI
from .connect_api import ConnectAPI, parse_leaf_ttl
from .connect_state import ConnectState
from .dispatch import Dispatcher, Faults, RecordedRequest
from .endpoint import Context, Router
from .http11 import HttpConnection
from .registry import AgentIdentity, Registry
from .routes import ROUTES
from .runner import CheckRunner
from .state import State

__all__ = ["FakeConsul", "SupportsNow"]

_T = TypeVar("_T")


class SupportsNow(Protocol):
    """A clock object such as ``meshlib.clock.ManualClock``."""

    def now(self) -> float: ...


def _as_callable(clock: Callable[[], float] | SupportsNow | None) -> Callable[[], float]:
    if clock is None:
        return time.monotonic
    now = getattr(clock, "now", None)
    if callable(now):
        return now  # type: ignore[no-any-return]
    if callable(clock):
        return clock
    raise TypeError(f"clock must be a callable or have .now(), got {clock!r}")


class FakeConsul(StateAPI, ConnectAPI):
    """A Consul agent in dev mode, over real HTTP on 127.0.0.1, for tests.

    Use ``with FakeConsul() as consul:`` (or ``async with``), then point clients at
    ``consul.http_addr``. ``clock`` (a callable or an object with ``now()``) drives TTL expiry:
    with the default real clock a background timer expires checks on time; with an injected
    clock expiry happens on ``tick()`` and before each request, so tests never sleep. ``rng``
    supplies the blocking-query jitter. ``acl_tokens`` maps tokens to ``"read"`` or ``"write"``
    and turns ACLs on, as does ``default_acl_policy="deny"``. ``run_checks`` lets the agent
    execute its HTTP and TCP checks (see ``runner``); turn it off to drive every status by hand.
    ``connect`` enables the built-in Connect CA and intentions (``connect_api``), whose leaves
    live ``leaf_cert_ttl`` (a Go duration or seconds; Consul's default is 72h).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        acl_tokens: Mapping[str, str] | None = None,
        default_acl_policy: str = "allow",
        clock: Callable[[], float] | SupportsNow | None = None,
        datacenter: str = "dc1",
        node_name: str = "fake-node",
        node_address: str = "127.0.0.1",
        node_meta: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        consul_version: str = "1.20.0",
        run_checks: bool = True,
        connect: bool = True,
        leaf_cert_ttl: str | float = "72h",
    ) -> None:
        if default_acl_policy not in ("allow", "deny"):
            raise ValueError(
                f"default_acl_policy must be 'allow' or 'deny', got {default_acl_policy!r}"
            )
        for token, policy in (acl_tokens or {}).items():
            if policy not in ("read", "write"):
                raise ValueError(
                    f"ACL token {token!r}: policy must be 'read' or 'write', got {policy!r}"
                )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be within [0, 65535], got {port}")
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._real_clock = clock is None
        self._clock = _as_callable(clock)
        seed = f"meshlib-fake-consul:{datacenter}:{node_name}"
        node_id = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
        identity = AgentIdentity(
            datacenter, node_name, node_address, node_id, consul_version, dict(node_meta or {})
        )
        self._state = State(clock=self._clock, notify=self._notify)
        self._registry = Registry(self._state, identity)
        self._registry.bootstrap()
        self._connect = ConnectState.create(
            self._state,
            datacenter=datacenter,
            node_name=node_name,
            enabled=connect,
            leaf_ttl=parse_leaf_ttl(leaf_cert_ttl),
            default_allow=default_acl_policy == "allow",
        )
        self._connect.ca.wake_later = self._wake_later
        self._faults = Faults()
        self._dispatcher = Dispatcher(
            Context(self._state, self._registry, identity, self._connect),
            Router(ROUTES),
            acl_tokens=dict(acl_tokens) if acl_tokens is not None else None,
            default_acl_policy=default_acl_policy,
            rng=rng or random.Random(),
            faults=self._faults,
        )
        self._life = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop_thread_id: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()
        self._ttl_task: asyncio.Task[None] | None = None
        self._runner: CheckRunner | None = None
        self._run_checks = run_checks
        self._ttl_event: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeConsul:
        """Start listening (idempotent); returns self so ``FakeConsul().start()`` chains."""
        with self._life:
            if self._loop is not None:
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="FakeConsul", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                self._call(self._listen(self._requested_port))
                if self._real_clock:
                    self._call(self._start_ttl_timer())
                if self._run_checks:
                    self._call(self._start_runner())
            except BaseException:
                self._close_loop()
                raise
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and end the background thread."""
        with self._life:
            if self._loop is None:
                return
            try:
                self._call(self._shutdown())
            finally:
                self._close_loop()

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._loop_thread_id = threading.get_ident()
        loop.call_soon(ready.set)
        loop.run_forever()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()
        self._loop_thread_id = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("FakeConsul is not running; call start() first")
        if threading.get_ident() == self._loop_thread_id:
            coro.close()
            raise RuntimeError("FakeConsul's control methods cannot run on its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    async def _listen(self, port: int) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self._dispatcher.handle, self._connections),
            host="127.0.0.1",
            port=port,
            reuse_address=True,
            backlog=4096,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._connections):
            conn.abort(reset=True)
        await asyncio.sleep(0)

    async def _start_ttl_timer(self) -> None:
        self._ttl_event = asyncio.Event()
        self._dispatcher.on_ttl_change = self._ttl_event.set
        self._ttl_task = asyncio.get_running_loop().create_task(self._ttl_timer())

    async def _start_runner(self) -> None:
        self._runner = CheckRunner(self._state, self.node_name)
        self._dispatcher.on_runnable_change = self._runner.sync
        self._runner.sync()

    async def _ttl_timer(self) -> None:
        """Expire TTLs on time with the real clock; re-armed whenever a deadline moves."""
        assert self._ttl_event is not None
        while True:
            self._ttl_event.clear()
            self._state.run_due()
            due = self._state.next_due()
            delay = 1.0 if due is None else min(max(due - self._clock(), 0.0), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ttl_event.wait(), delay)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            self._dispatcher.on_runnable_change = None
            self._runner.stop()
            self._runner = None
        await self._unlisten()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ttl_task = None

    def _notify(self, topics: frozenset[str]) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread_id:
            self._dispatcher.wake(topics)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._dispatcher.wake, topics)

    def _wake_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the server's loop after ``delay`` seconds (the CA's renewal timers)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.call_later, delay, fn)

    def __enter__(self) -> FakeConsul:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeConsul:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = f"http://127.0.0.1:{self._port}" if self._port else "not started"
        return f"<FakeConsul {where} index={self.index}>"

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The bound port (stable across ``down()``/``up()``)."""
        if self._port is None:
            raise RuntimeError("FakeConsul has not been started")
        return self._port

    @property
    def http_addr(self) -> str:
        """``127.0.0.1:PORT``, the form ``CONSUL_HTTP_ADDR`` takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---------------------------------------------------------------------- faults

    def fail_next(
        self, count: int = 1, status: int = 500, body: str = "meshlib FakeConsul: injected failure"
    ) -> None:
        """Answer the next ``count`` requests (any endpoint) with ``status`` and ``body``."""
        self._faults.fail_next(count, status, body)

    def hang(self, enabled: bool = True) -> None:
        """Accept requests but answer none until ``hang(False)``, which releases them."""
        self._faults.hanging = enabled

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` of real time."""
        self._faults.latency = max(0.0, seconds)

    def reset_index(self, to: int = 1) -> None:
        """Make the index go backwards (a snapshot restore); parked queries return at once."""
        self._state.reset_index(to)

    def drop_connections(self) -> None:
        """Reset every open client connection (TCP RST), including parked blocking queries."""
        self._call(self._drop())

    async def _drop(self) -> None:
        for conn in list(self._connections):
            conn.abort(reset=True)
        await asyncio.sleep(0)

    def down(self) -> None:
        """Stop listening and drop all connections: clients now get connection refused."""
        self._call(self._unlisten())

    def up(self) -> None:
        """Listen again on the same port after ``down()``."""
        self._call(self._listen(self.port))

    @property
    def is_up(self) -> bool:
        return self._server is not None

    # ----------------------------------------------------------------- observation

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (the last 10,000), oldest first."""
        return list(self._dispatcher.requests)

    def clear_requests(self) -> None:
        self._dispatcher.requests.clear()

    @property
    def active_blocking_queries(self) -> int:
        """How many blocking queries are parked right now."""
        return self._dispatcher.active_blocking

    def wait_for_blocking_queries(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` blocking queries are parked (so a test can then write)."""
        deadline = time.monotonic() + timeout
        while self._dispatcher.active_blocking < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self._dispatcher.active_blocking} blocking queries parked, wanted {count}"
                )
            time.sleep(0.002)

    async def wait_for_blocking_queries_async(self, count: int = 1, within: float = 5.0) -> None:
        """The same for async tests: the polling runs on a worker thread, not their loop."""
        await asyncio.to_thread(self.wait_for_blocking_queries, count, within)
