"""The fault-injection proxy: each toxic observed from a real client, at runtime, async and sync."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from meshlib.testing.faultproxy.proxy import (
    FaultProxy,
    Latency,
    bandwidth,
    latency,
    limit_data,
    reset_after_bytes,
    reset_peer,
    slow_close,
    timeout,
)
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread

pytestmark = pytest.mark.timeout(30)

BODY = b"x" * 10_000
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(UpstreamBehaviour(name="up", body=BODY)) as up:
        yield up


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(("127.0.0.1", upstream.port), rng=random.Random(0)) as p:
        yield p


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as c:
        yield c


async def _read_all(
    proxy: FaultProxy, request: bytes = REQUEST
) -> tuple[bytes, BaseException | None]:
    """Send ``request`` on a raw connection; read to EOF. Returns what arrived and how it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    data = b""
    error: BaseException | None = None
    try:
        writer.write(request)
        while chunk := await asyncio.wait_for(reader.read(65536), 2.0):
            data += chunk
    except OSError as exc:
        error = exc
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data, error


async def _until(predicate: object, seconds: float = 2.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# plain forwarding and counters


async def test_forwards_and_counts(proxy: FaultProxy, client: httpx.AsyncClient) -> None:
    assert proxy.addr == f"127.0.0.1:{proxy.port}"
    r = await client.get(proxy.url + "/echo")
    assert r.json()["server"] == "up"
    stats = proxy.stats()
    assert (stats.accepted, stats.open, stats.listening) == (1, 1, True)
    assert stats.bytes_upstream > 50  # the request line and headers
    assert stats.bytes_downstream > len(r.content)
    await client.aclose()
    await _until(lambda: proxy.stats().open == 0)


async def test_unreachable_upstream_closes_the_client(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # a port that was free a moment ago, and nothing listens there
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with FaultProxy(("127.0.0.1", dead)) as p:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(p.url)


# latency, bandwidth


async def test_latency_delays_responses(proxy: FaultProxy, client: httpx.AsyncClient) -> None:
    await client.get(proxy.url)  # connection established outside the measurement
    name = proxy.add(latency(100))
    start = time.perf_counter()
    await client.get(proxy.url)  # the open connection is affected too
    assert time.perf_counter() - start >= 0.1
    proxy.remove(name)
    start = time.perf_counter()
    await client.get(proxy.url)
    assert time.perf_counter() - start < 0.1
    assert proxy.stats().accepted == 1


async def test_upstream_latency_delays_requests(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(latency(80, direction="upstream"))
    start = time.perf_counter()
    await client.get(proxy.url)
    assert time.perf_counter() - start >= 0.08


async def test_jitter_is_drawn_from_the_injected_rng(
    upstream: Upstream, client: httpx.AsyncClient
) -> None:
    class Recorder(random.Random):
        def __init__(self) -> None:
            super().__init__(0)
            self.calls: list[tuple[float, float]] = []

        def uniform(self, a: float, b: float) -> float:
            self.calls.append((a, b))
            return b

    rng = Recorder()
    async with FaultProxy(("127.0.0.1", upstream.port), rng=rng) as p:
        p.add(latency(50, jitter_ms=40))
        start = time.perf_counter()
        await client.get(p.url)
        assert time.perf_counter() - start >= 0.09  # 50 ms + the drawn +40 ms
    assert rng.calls
    assert set(rng.calls) == {(-40, 40)}


async def test_toxicity_zero_spares_every_connection(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(latency(300, toxicity=0.0))
    start = time.perf_counter()
    await client.get(proxy.url)
    assert time.perf_counter() - start < 0.3


async def test_bandwidth_paces_the_response(proxy: FaultProxy, client: httpx.AsyncClient) -> None:
    proxy.add(bandwidth(50))  # 50 kB/s: the 10 kB body alone takes 0.2 s
    start = time.perf_counter()
    r = await client.get(proxy.url)
    assert r.content == BODY
    assert time.perf_counter() - start >= 0.2


# timeout


async def test_timeout_zero_hangs_until_the_client_gives_up(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(timeout(0))
    start = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await client.get(proxy.url, timeout=0.2)
    assert time.perf_counter() - start >= 0.2
    assert proxy.stats().open == 1  # held, never closed


async def test_timeout_zero_releases_held_data_when_removed(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    name = proxy.add(timeout(0))
    pending = asyncio.create_task(client.get(proxy.url))
    await asyncio.sleep(0.1)
    assert not pending.done()
    proxy.remove(name)
    r = await asyncio.wait_for(pending, 2.0)
    assert r.content == BODY


async def test_timeout_closes_the_connection_after_ms(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(timeout(100))
    start = time.perf_counter()
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(proxy.url)
    assert 0.1 <= time.perf_counter() - start < 1.0


# resets and truncation


async def test_reset_peer_sends_rst(proxy: FaultProxy) -> None:
    proxy.add(reset_peer())
    data, error = await _read_all(proxy)
    assert data == b""
    assert isinstance(error, ConnectionResetError)


async def test_reset_peer_after_ms_and_through_httpx(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(reset_peer(after_ms=100))
    proxy.add(timeout(0))  # hold the response so only the reset can end the request
    start = time.perf_counter()
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.get(proxy.url)
    assert time.perf_counter() - start >= 0.1


async def test_limit_data_truncates_then_closes_cleanly(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(limit_data(200))
    data, error = await _read_all(proxy)
    assert error is None  # a FIN, not a reset
    assert len(data) == 200
    assert data.startswith(b"HTTP/1.1 200 OK")
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(proxy.url)


async def test_limit_data_upstream_cuts_the_request(proxy: FaultProxy) -> None:
    proxy.add(limit_data(10, direction="upstream"))
    data, _ = await _read_all(proxy)
    assert data == b""  # the upstream never saw a complete request


async def test_reset_after_bytes_resets_mid_response(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    proxy.add(reset_after_bytes(300))
    data, error = await _read_all(proxy)
    assert isinstance(error, ConnectionResetError)
    assert len(data) <= 300
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.get(proxy.url)
    assert proxy.stats().bytes_downstream == 600  # exactly the limit, twice


async def test_slow_close_delays_the_fin(proxy: FaultProxy) -> None:
    proxy.add(slow_close(150))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    start = time.perf_counter()
    first = await reader.read(1)
    got_data = time.perf_counter() - start
    rest = await asyncio.wait_for(reader.read(), 2.0)  # returns at EOF
    got_eof = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    assert len(first + rest) > len(BODY)
    assert got_data < 0.1
    assert got_eof >= 0.15


# refusing


async def test_refuse_and_restore_on_the_same_port(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    port = proxy.port
    proxy.refuse()
    assert not proxy.stats().listening
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(httpx.ConnectError):
        await client.get(proxy.url)
    proxy.restore()
    proxy.restore()  # already listening: nothing to do
    assert proxy.port == port
    assert (await client.get(proxy.url)).status_code == 200
    assert proxy.stats().listening
    proxy.refuse()
    proxy.restore()
    proxy.refuse()  # the restore still starting stands down
    await asyncio.sleep(0.02)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_refuse_can_drop_open_connections(
    proxy: FaultProxy, client: httpx.AsyncClient
) -> None:
    await client.get(proxy.url)
    assert proxy.stats().open == 1
    proxy.refuse(drop_existing=True)
    assert proxy.stats().open == 0
    with pytest.raises(httpx.TransportError):
        await client.get(proxy.url)


# the toxic table


async def test_toxic_names_and_table(proxy: FaultProxy) -> None:
    assert proxy.add(latency(10)) == "latency_downstream"
    assert proxy.add(latency(20)) == "latency_downstream_2"
    assert proxy.add(latency(5, direction="upstream"), name="slow-req") == "slow-req"
    with pytest.raises(ValueError, match="already exists"):
        proxy.add(latency(1), name="slow-req")
    assert proxy.toxics()["latency_downstream_2"] == Latency(ms=20)
    proxy.remove("latency_downstream")
    with pytest.raises(KeyError):
        proxy.remove("latency_downstream")
    with pytest.raises(TypeError):
        proxy.add("latency")  # type: ignore[arg-type]
    proxy.clear()
    assert proxy.toxics() == {}


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: latency(-1), ValueError, "ms must be a finite number >= 0, got -1"),
        (lambda: latency(1, jitter_ms=float("nan")), ValueError, "jitter_ms must be"),
        (lambda: bandwidth(0), ValueError, "kbps must be > 0"),
        (lambda: timeout(-5), ValueError, "ms must be"),
        (lambda: reset_peer(after_ms=-1), ValueError, "after_ms must be"),
        (lambda: limit_data(-1), ValueError, "limit must be >= 0, got -1"),
        (lambda: limit_data(1.5), TypeError, "limit must be an int"),  # type: ignore[arg-type]
        (lambda: slow_close(-1), ValueError, "delay_ms must be"),
        (lambda: latency(1, direction="sideways"), ValueError, "direction must be"),  # type: ignore[arg-type]
        (lambda: latency(1, toxicity=1.5), ValueError, r"toxicity must be within \[0, 1\]"),
    ],
)
def test_toxics_validate(make: object, error: type[Exception], message: str) -> None:
    assert callable(make)
    with pytest.raises(error, match=message):
        make()


def test_toxics_are_frozen() -> None:
    t = latency(10)
    with pytest.raises(AttributeError):
        t.ms = 5  # type: ignore[misc]


# background-thread mode for synchronous tests


def test_sync_mode_runs_its_own_loop() -> None:
    with (
        UpstreamThread(UpstreamBehaviour(name="s")) as up,
        FaultProxy(("127.0.0.1", up.port)) as proxy,
        httpx.Client(trust_env=False, timeout=2.0) as c,
    ):
        assert c.get(proxy.url).headers["x-upstream"] == "s"
        proxy.add(latency(100))
        start = time.perf_counter()
        c.get(proxy.url)
        assert time.perf_counter() - start >= 0.1
        with pytest.raises(ValueError, match="already exists"):
            proxy.add(latency(1), name="latency_downstream")
        proxy.clear()
        proxy.refuse(drop_existing=True)
        assert proxy.stats().open == 0
        with pytest.raises(httpx.ConnectError):
            c.get(proxy.url)
        proxy.restore()
        assert c.get(proxy.url).status_code == 200
        assert proxy.stats().accepted == 2
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as c:
        c.get(proxy.url)  # stopped
