"""Engine tests: both drivers behind real httpx clients against a real 127.0.0.1 server.

Why through httpx clients: that is how the mesh and users reach the engine, so these
tests pin the contract that matters (status, headers, bodies, connection reuse and the
exact httpx exception class per failure, which the retry layer relies on). Each test
runs once per driver; the blocking client is driven from a thread pool so one async test
body covers both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import trustme

from _engine_server import EngineServer
from meshlib.engine import AsyncEngine, SyncEngine, aio

Timeout = httpx.Timeout(2.0)


class Driver:
    """One engine behind an httpx client; ``request`` works the same for both kinds."""

    def __init__(self, kind: str, **engine_kwargs: Any) -> None:
        self.kind = kind
        self.engine: AsyncEngine | SyncEngine
        self.client: httpx.AsyncClient | httpx.Client
        if kind == "async":
            self.engine = AsyncEngine(**engine_kwargs)
            self.client = httpx.AsyncClient(transport=self.engine, timeout=Timeout)
        else:
            self.engine = SyncEngine(**engine_kwargs)
            self.client = httpx.Client(transport=self.engine, timeout=Timeout)
        self.executor = ThreadPoolExecutor(40)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call on the driver's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if isinstance(self.client, httpx.AsyncClient):
            return await self.client.request(method, url, **kwargs)
        response: httpx.Response = await self.run(self.client.request, method, url, **kwargs)
        return response

    def body(self, parts: list[bytes]) -> Any:
        """A streaming request body of the right flavour (httpx frames it chunked)."""
        if self.kind == "async":

            async def agen() -> AsyncIterator[bytes]:
                for part in parts:
                    yield part

            return agen()

        def gen() -> Iterator[bytes]:
            yield from parts

        return gen()

    async def aclose(self) -> None:
        if isinstance(self.client, httpx.AsyncClient):
            await self.client.aclose()
        else:
            self.client.close()
        self.executor.shutdown(wait=True)


@pytest.fixture
def server() -> Iterator[EngineServer]:
    srv = EngineServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=["async", "sync"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Driver]]:
    drivers: list[Driver] = []

    def factory(**engine_kwargs: Any) -> Driver:
        drivers.append(Driver(request.param, **engine_kwargs))
        return drivers[-1]

    try:
        yield factory
    finally:
        for d in drivers:
            await d.aclose()


def _port(response: httpx.Response) -> int:
    return int(response.headers["x-peer-port"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- requests and responses ----------------------------------------------------------------


async def test_get_and_post_with_bytes_body(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    r = await d.request("GET", f"{server.url}/echo")
    assert (r.status_code, r.headers["x-method"], r.content) == (200, "GET", b"")
    assert r.http_version == "HTTP/1.1"
    assert r.reason_phrase == "OK"
    r = await d.request("POST", f"{server.url}/echo", content=b"hello mesh")
    assert r.content == b"hello mesh"
    assert r.headers["x-request-te"] == "-"  # in-memory body: Content-Length, not chunked


async def test_chunked_request_body_from_generator(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    r = await d.request("POST", f"{server.url}/echo", content=d.body([b"ab", b"", b"cd", b"e"]))
    assert r.content == b"abcde"
    assert r.headers["x-request-te"] == "chunked"


async def test_chunked_response(server: EngineServer, make: Callable[..., Driver]) -> None:
    r = await make().request("GET", f"{server.url}/chunked?n=5")
    assert r.text == "".join(f"chunk-{i};" for i in range(5))


async def test_interim_100_and_close_delimited_body(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    r = await d.request("GET", f"{server.url}/continue")
    assert (r.status_code, r.content) == (201, b"after-100")
    r = await d.request("GET", f"{server.url}/eof")
    assert r.content == b"until-eof"


async def test_large_response_is_complete(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    r = await make().request("GET", f"{server.url}/big?size={3 * 1024 * 1024}")
    assert len(r.content) == 3 * 1024 * 1024


async def test_slow_consumer_pauses_reading(server: EngineServer) -> None:
    async with httpx.AsyncClient(transport=AsyncEngine()) as client:
        async with client.stream("GET", f"{server.url}/big?size={4 * 1024 * 1024}") as r:
            sizes = []
            async for chunk in r.aiter_raw():
                sizes.append(len(chunk))
                if len(sizes) < 4:
                    await asyncio.sleep(0.05)  # let the server run far ahead
        assert sum(sizes) == 4 * 1024 * 1024
        # Without pause_reading the whole body would pile up and come out as one chunk.
        assert max(sizes) < 1024 * 1024


# -- connection reuse ----------------------------------------------------------------------


async def test_keepalive_reuses_one_connection(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    ports = {_port(await d.request("GET", f"{server.url}/echo")) for _ in range(4)}
    assert len(ports) == 1
    assert server.accepted == 1


async def test_head_and_204_keep_the_connection(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    first = await d.request("GET", f"{server.url}/echo")
    head = await d.request("HEAD", f"{server.url}/echo")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == "13"  # announced, never sent
    empty = await d.request("GET", f"{server.url}/nocontent")
    assert (empty.status_code, empty.content) == (204, b"")
    last = await d.request("GET", f"{server.url}/echo")
    assert {_port(first), _port(head), _port(empty), _port(last)} == {_port(first)}


async def test_server_closing_idle_connection(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    before = _port(await d.request("GET", f"{server.url}/echo"))
    assert server.drop_idle() == 1
    await asyncio.sleep(0.05)
    r = await d.request("GET", f"{server.url}/echo")
    assert r.status_code == 200
    assert _port(r) != before


async def test_bytes_on_idle_connection_discard_it(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    before = _port(await d.request("GET", f"{server.url}/late-garbage"))
    await asyncio.sleep(0.06)
    r = await d.request("GET", f"{server.url}/echo")
    assert (r.status_code, r.content) == (200, b"")
    assert _port(r) != before


async def test_connection_close_response_is_not_reused(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    first = await d.request("GET", f"{server.url}/close")
    second = await d.request("GET", f"{server.url}/close")
    assert first.content == second.content == b"bye"
    assert _port(first) != _port(second)
    assert server.accepted == 2


async def test_early_close_of_streamed_response_discards_connection(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    url = f"{server.url}/big?size={2 * 1024 * 1024}"
    if isinstance(d.client, httpx.AsyncClient):
        async with d.client.stream("GET", url) as r:
            streamed = _port(r)
            async for _ in r.aiter_raw():
                break
    else:
        client = d.client

        def read_one_chunk() -> int:
            with client.stream("GET", url) as r:
                next(r.iter_raw())
                return _port(r)

        streamed = await d.run(read_one_chunk)
    after = await d.request("GET", f"{server.url}/echo")
    assert _port(after) != streamed
    assert server.accepted == 2


async def test_keepalive_expiry_and_max_keepalive(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make(limits=httpx.Limits(max_keepalive_connections=1, keepalive_expiry=0.1))
    await asyncio.gather(*(d.request("GET", f"{server.url}/delay") for _ in range(3)))
    for _ in range(50):  # the two connections beyond max_keepalive are closed on release
        if server.open_connections() == 1:
            break
        await asyncio.sleep(0.01)
    assert server.open_connections() == 1
    before = _port(await d.request("GET", f"{server.url}/echo"))
    await asyncio.sleep(0.15)
    after = _port(await d.request("GET", f"{server.url}/echo"))
    assert before != after  # the idle connection outlived keepalive_expiry


async def test_aclose_closes_pooled_connections(server: EngineServer) -> None:
    engine = AsyncEngine()
    async with httpx.AsyncClient(transport=engine) as client:
        await asyncio.gather(*(client.get(f"{server.url}/delay") for _ in range(3)))
    for _ in range(50):
        if server.open_connections() == 0:
            break
        await asyncio.sleep(0.01)
    assert server.open_connections() == 0


# -- failures map to the precise httpx exception ---------------------------------------------


async def test_connect_error_on_closed_port(make: Callable[..., Driver]) -> None:
    with pytest.raises(httpx.ConnectError):
        await make().request("GET", f"http://127.0.0.1:{_closed_port()}/")


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full, so a new SYN is dropped and connect() hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()


async def test_connect_timeout(full_backlog: int, make: Callable[..., Driver]) -> None:
    with pytest.raises(httpx.ConnectTimeout):
        await make().request(
            "GET", f"http://127.0.0.1:{full_backlog}/", timeout=httpx.Timeout(2.0, connect=0.2)
        )


async def test_read_timeout_then_pool_still_usable(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make()
    with pytest.raises(httpx.ReadTimeout):
        await d.request("GET", f"{server.url}/hang", timeout=httpx.Timeout(2.0, read=0.2))
    with pytest.raises(httpx.ReadTimeout):
        await d.request("GET", f"{server.url}/slowbody", timeout=httpx.Timeout(2.0, read=0.2))
    assert (await d.request("GET", f"{server.url}/echo")).status_code == 200


async def test_write_timeout_when_server_does_not_read(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    body = b"x" * (48 * 1024 * 1024)
    timeout = httpx.Timeout(5.0, write=0.3)
    with pytest.raises(httpx.WriteTimeout):
        await make().request("POST", f"{server.url}/noread", content=body, timeout=timeout)


async def test_remote_protocol_errors(server: EngineServer, make: Callable[..., Driver]) -> None:
    d = make()
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await d.request("GET", f"{server.url}/drop")
    with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
        await d.request("GET", f"{server.url}/garbage")
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await d.request("GET", f"{server.url}/truncated")


async def test_connection_reset_mid_body_is_read_error(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    with pytest.raises(httpx.ReadError):
        await make().request("GET", f"{server.url}/reset")


async def test_unsupported_scheme(make: Callable[..., Driver]) -> None:
    d = make()
    request = httpx.Request("GET", "ftp://127.0.0.1/file")
    if isinstance(d.engine, AsyncEngine):
        with pytest.raises(httpx.UnsupportedProtocol):
            await d.engine.handle_async_request(request)
    else:
        with pytest.raises(httpx.UnsupportedProtocol):
            d.engine.handle_request(request)


async def test_header_injection_is_refused(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        await make().request("GET", f"{server.url}/echo", headers={"x-evil": "a\r\nHost: b"})


async def test_pool_timeout_when_origin_is_full(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make(limits=httpx.Limits(max_connections=1))
    held = httpx.Request("GET", f"{server.url}/echo")
    short = httpx.Timeout(2.0, pool=0.1)
    if isinstance(d.client, httpx.AsyncClient):
        response = await d.client.send(held, stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await d.client.get(f"{server.url}/echo", timeout=short)
        await response.aclose()
    else:
        response = await d.run(d.client.send, held, stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await d.request("GET", f"{server.url}/echo", timeout=short)
        response.close()
    assert (await d.request("GET", f"{server.url}/echo", timeout=short)).status_code == 200


async def test_concurrency_32_respects_max_connections(
    server: EngineServer, make: Callable[..., Driver]
) -> None:
    d = make(limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
    responses = await asyncio.gather(
        *(d.request("GET", f"{server.url}/delay?s=0.03") for _ in range(32))
    )
    assert all(r.status_code == 200 for r in responses)
    assert len({_port(r) for r in responses}) <= 8
    assert server.peak <= 8
    assert server.accepted == 8  # FIFO hand-over reused the eight connections


# -- cancellation (asyncio) ------------------------------------------------------------------


def _live_engine_timers() -> list[asyncio.TimerHandle]:
    """Timeout handles of engine connections still armed on the running loop."""
    scheduled: list[asyncio.TimerHandle] = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    return [
        h
        for h in scheduled
        if not h.cancelled()
        and isinstance(getattr(getattr(h, "_callback", None), "__self__", None), aio._Connection)
    ]


async def test_cancellation_closes_connection_and_frees_slot(server: EngineServer) -> None:
    engine = AsyncEngine(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=engine, timeout=Timeout) as client:
        task = asyncio.create_task(client.get(f"{server.url}/hang"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (pool,) = engine._pools.values()
        assert (pool.open, len(pool.waiters), _live_engine_timers()) == (0, 0, [])
        r = await client.get(f"{server.url}/echo", timeout=httpx.Timeout(2.0, pool=0.5))
        assert r.status_code == 200
        assert (pool.open, len(pool.waiters), len(pool.idle)) == (1, 0, 1)
        assert server.accepted == 2  # the cancelled request's connection was not reused
    assert (pool.open, _live_engine_timers()) == (0, [])


async def test_cancelled_pool_waiter_leaves_no_trace(server: EngineServer) -> None:
    engine = AsyncEngine(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=engine, timeout=Timeout) as client:
        held = await client.send(client.build_request("GET", f"{server.url}/echo"), stream=True)
        waiter = asyncio.create_task(client.get(f"{server.url}/echo"))
        await asyncio.sleep(0.02)
        (pool,) = engine._pools.values()
        assert len(pool.waiters) == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await held.aclose()
        assert (pool.open, len(pool.waiters), len(pool.idle)) == (1, 0, 1)
        assert (await client.get(f"{server.url}/echo")).status_code == 200
    assert (pool.open, len(pool.idle), _live_engine_timers()) == (0, 0, [])


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_server() -> Iterator[tuple[EngineServer, ssl.SSLContext, list[str | None]]]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("users").configure_cert(server_ctx)
    seen: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    srv = EngineServer(server_ctx).start()
    try:
        yield srv, client_ctx, seen
    finally:
        srv.stop()


async def test_tls_uses_sni_hostname_extension(
    tls_server: tuple[EngineServer, ssl.SSLContext, list[str | None]],
    make: Callable[..., Driver],
) -> None:
    srv, client_ctx, seen = tls_server
    d = make(verify=client_ctx)
    r = await d.request("GET", f"{srv.url}/echo", extensions={"sni_hostname": "users"})
    assert r.status_code == 200
    assert seen == ["users"]
    with pytest.raises(httpx.ConnectError):  # the cert names "users", not 127.0.0.1
        await d.request("GET", f"{srv.url}/echo")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_async_engine_moves_to_a_new_event_loop(server: EngineServer) -> None:
    engine = AsyncEngine()

    async def get() -> int:
        response = await engine.handle_async_request(httpx.Request("GET", f"{server.url}/echo"))
        await response.aread()
        await response.aclose()
        return _port(response)

    first = asyncio.run(get())  # leaves an idle connection bound to a loop that is now gone
    second = asyncio.run(get())
    assert first != second
    asyncio.run(engine.aclose())
    gc.collect()  # the abandoned first-loop transport warns here, inside this test
