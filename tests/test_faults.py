"""The faults a mesh client must survive (REFERENCE §6), each on real sockets on 127.0.0.1."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.testing import FaultProxy, reset_after_bytes
from meshlib.testing.faultproxy.proxy import bandwidth
from meshlib.upstream import Upstream, UpstreamBehaviour


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def _client(addrs: list[str], **config: object) -> meshlib.AsyncMeshClient:
    clock = config.pop("clock", None)
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": addrs}),
        config=meshlib.MeshConfig(**config),  # type: ignore[arg-type]
        clock=clock,  # type: ignore[arg-type]
        timeout=5.0,
    )


@pytest.fixture
async def ok() -> AsyncIterator[Upstream]:
    async with Upstream(UpstreamBehaviour(name="ok")) as u:
        yield u


async def test_empty_endpoint_set_fails_fast() -> None:
    async with _client([]) as client:
        start = time.monotonic()
        with pytest.raises(meshlib.NoEndpointsAvailable, match="lists none"):
            await client.get("http://users/")
    assert time.monotonic() - start < 0.1


async def test_connect_refused_fails_over_at_once_even_for_post(ok: Upstream) -> None:
    async with _client([f"127.0.0.1:{_closed_port()}", f"127.0.0.1:{ok.port}"]) as client:
        for _ in range(10):
            r = await client.post("http://users/echo", content=b"order")
            assert r.status_code == 200
    assert ok.stats().total == 10


async def test_connect_timeout_is_requeued_for_post() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.port == 1:
            raise httpx.ConnectTimeout("connect timed out", request=request)
        return httpx.Response(201)

    async with meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:1", "127.0.0.1:2"]}),
        config=meshlib.MeshConfig(balancer="round-robin"),
        transport=httpx.MockTransport(handler),
    ) as client:
        statuses = [
            (await client.post("http://users/", content=b"x")).status_code for _ in range(4)
        ]
    assert statuses == [201] * 4


async def test_hang_after_connect_per_try_timeout_then_retry_within_deadline(ok: Upstream) -> None:
    async with Upstream(UpstreamBehaviour(name="hang", hang=True)) as hang:
        async with _client(
            [f"127.0.0.1:{hang.port}", f"127.0.0.1:{ok.port}"],
            per_try_timeout=0.2,
            timeout=2.0,
            balancer="round-robin",
        ) as client:
            start = time.monotonic()
            results = [await client.get("http://users/") for _ in range(2)]
            elapsed = time.monotonic() - start
    assert [r.headers["x-upstream"] for r in results] == ["ok", "ok"]
    assert elapsed < 1.0


async def test_hang_for_post_is_not_retried(ok: Upstream) -> None:
    async with Upstream(UpstreamBehaviour(name="hang", hang=True)) as hang:
        async with _client([f"127.0.0.1:{hang.port}"], per_try_timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("http://users/", content=b"x")
        assert hang.stats().total == 1


async def test_reset_mid_response_retries_get_but_never_post(ok: Upstream) -> None:
    big = UpstreamBehaviour(name="big", body=b"x" * 200_000)
    async with Upstream(big) as up, FaultProxy(("127.0.0.1", up.port)) as proxy:
        proxy.add(reset_after_bytes(1000))
        addrs = [proxy.addr, f"127.0.0.1:{ok.port}"]
        async with _client(addrs, balancer="round-robin") as client:
            for _ in range(4):
                r = await client.get("http://users/")
                assert r.headers["x-upstream"] == "ok"
            assert up.stats().total >= 1  # some GETs met the reset and were retried
            up.reset_stats()
            failed_posts = 0
            for _ in range(4):
                try:
                    await client.post("http://users/", content=b"pay")
                except httpx.ReadError:
                    failed_posts += 1
        # Every POST that met the reset failed; none was sent twice.
        assert failed_posts >= 1
        assert up.stats().total == failed_posts


async def test_post_reset_after_body_sent_reaches_server_exactly_once() -> None:
    async with Upstream(UpstreamBehaviour(name="a", body=b"y" * 100_000)) as up:
        async with FaultProxy(("127.0.0.1", up.port)) as proxy:
            proxy.add(reset_after_bytes(500))
            async with _client([proxy.addr]) as client:
                with pytest.raises(httpx.TransportError):
                    await client.post("http://users/", content=b"charge-card")
            assert up.stats().total == 1


async def test_retry_after_is_honoured_and_capped_by_the_deadline() -> None:
    behaviour = UpstreamBehaviour(name="busy", fail_fraction=1.0, retry_after="2")
    clock = ManualClock()
    async with Upstream(behaviour) as busy:
        async with _client([f"127.0.0.1:{busy.port}"], clock=clock) as client:
            r = await client.get("http://users/")
        assert r.status_code == 503
        assert busy.stats().total == 3
        assert [s for s in clock.slept if s >= 2.0] == [2.0, 2.0]
        async with _client([f"127.0.0.1:{busy.port}"], timeout=1.0) as client:
            start = time.monotonic()
            r = await client.get("http://users/")
        assert r.status_code == 503
        assert time.monotonic() - start < 0.5  # Retry-After beyond the deadline: returned at once
        assert busy.stats().total == 4


async def test_429_marks_the_endpoint_overloaded(ok: Upstream) -> None:
    limited = UpstreamBehaviour(
        name="limited", fail_fraction=1.0, fail_status=429, retry_after="30"
    )
    async with Upstream(limited) as up:
        async with _client([f"127.0.0.1:{up.port}", f"127.0.0.1:{ok.port}"]) as client:
            seen = [(await client.get("http://users/")).headers["x-upstream"] for _ in range(40)]
    assert seen.count("limited") <= 2
    assert up.stats().total <= 2


async def test_slow_loris_body_is_bounded_by_the_deadline() -> None:
    async with Upstream(UpstreamBehaviour(name="loris", body=b"z" * 100_000)) as up:
        async with FaultProxy(("127.0.0.1", up.port)) as proxy:
            proxy.add(bandwidth(20))  # 20 KB/s: the body would take ~5 s
            async with _client([proxy.addr], timeout=0.5) as client:
                start = time.monotonic()
                with pytest.raises(meshlib.DeadlineExceeded):
                    await client.get("http://users/")
                assert time.monotonic() - start < 1.2


async def test_persistent_failure_is_capped_by_the_budget() -> None:
    clock = ManualClock()
    behaviour = UpstreamBehaviour(name="down", fail_fraction=1.0)
    async with Upstream(behaviour) as down:
        budget = meshlib.BudgetPolicy(ttl=10, min_per_sec=1, percent=0.2)
        async with _client(
            [f"127.0.0.1:{down.port}"],
            clock=clock,
            budget=budget,
            accrual=meshlib.AccrualPolicy(enabled=False),
        ) as client:
            calls = 200
            for _ in range(calls):
                r = await client.get("http://users/")
                assert r.status_code == 503
            state = client.mesh_state()["services"]["users"]["budget"]
        sent = down.stats().total
    # 200 calls, at most 20% + 10 floor retries (the manual clock barely moves).
    assert sent <= 1.2 * calls + 10
    assert sent >= calls
    assert state["exhausted"] > 0


async def test_streaming_body_beyond_the_cap_is_never_replayed() -> None:
    behaviour = UpstreamBehaviour(name="down", fail_fraction=1.0)

    async def body(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 1024):
            yield b"b" * 1024

    async with Upstream(behaviour) as down:
        async with _client([f"127.0.0.1:{down.port}"], clock=ManualClock()) as client:
            r = await client.put("http://users/", content=body(200 * 1024))
            assert r.status_code == 503
            assert down.stats().total == 1
            r = await client.put("http://users/", content=body(8 * 1024))
            assert r.status_code == 503
            assert down.stats().total == 4  # small stream buffered: 3 attempts


async def test_redirect_out_of_the_mesh_carries_no_mesh_headers() -> None:
    outside: list[httpx.Request] = []

    def mesh(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://api.example.com/next"})

    def third_party(request: httpx.Request) -> httpx.Response:
        outside.append(request)
        return httpx.Response(200)

    transport = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]}),
        config=meshlib.MeshConfig(timeout=5.0),
        transport=httpx.MockTransport(mesh),
        passthrough=httpx.MockTransport(third_party),
    )
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        r = await client.get("http://users/start")
    assert r.status_code == 200
    (req,) = outside
    assert meshlib.DEADLINE_HEADER not in req.headers


async def test_caller_cancel_releases_everything_and_charges_nothing() -> None:
    async with Upstream(UpstreamBehaviour(name="hang", hang=True)) as hang:
        async with _client([f"127.0.0.1:{hang.port}"]) as client:
            task = asyncio.create_task(client.get("http://users/"))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if hang.stats().total:
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            (svc,) = client.mesh_state()["services"].values()
            (ep,) = svc["endpoints"]
            assert ep["in_flight"] == 0
            assert ep["state"] == "alive"
            assert ep["requests_in_window"] == 0
            assert ep["failure_score"] == 0
        for _ in range(100):
            if hang.stats().open_connections == 0:
                break
            await asyncio.sleep(0.01)
        assert hang.stats().open_connections == 0
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []


async def test_retried_attempts_release_their_load_and_count_as_failures() -> None:
    async with Upstream(UpstreamBehaviour(name="down", fail_fraction=1.0)) as down:
        async with _client([f"127.0.0.1:{down.port}"], clock=ManualClock()) as client:
            await client.get("http://users/")
            (ep,) = client.mesh_state()["services"]["users"]["endpoints"]
    assert down.stats().total == 3
    assert ep["in_flight"] == 0
    assert ep["requests_in_window"] == 3
    assert ep["success_rate"] == 0.0


async def test_response_says_which_endpoint_answered_after_how_many_attempts(ok: Upstream) -> None:
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad:
        async with _client(
            [f"127.0.0.1:{bad.port}", f"127.0.0.1:{ok.port}"],
            balancer="round-robin",
            clock=ManualClock(),
        ) as client:
            r = await client.get("http://users/")
    mesh = r.extensions["mesh"]
    assert mesh["endpoint"] == f"127.0.0.1:{ok.port}"
    assert mesh["attempts"] == 2
    assert mesh["history"] == [f"#1 127.0.0.1:{bad.port}: 503"]
