"""The pipeline's order, proven: deadline over retries, per-try timeout under accrual,
an open breaker costs no attempt, and half-open admits exactly one probe."""

import asyncio
import time

import httpx
import pytest

import meshlib
from meshlib.upstream import Upstream, UpstreamBehaviour


async def test_a_deadline_stops_the_retries() -> None:
    slow_fail = UpstreamBehaviour(name="bad", fail_fraction=1.0, latency=0.15)
    async with Upstream(slow_fail) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{bad.port}"]}),
            config=meshlib.MeshConfig(timeout=0.25, retry=meshlib.RetryPolicy(max_attempts=5)),
        ) as client:
            start = time.monotonic()
            r = await client.get("http://users/")
            elapsed = time.monotonic() - start
    # The second attempt could not finish in the time left, so it was never started.
    assert r.status_code == 503
    assert bad.stats().total == 1
    assert elapsed < 0.25


async def test_deadline_exceeded_when_time_runs_out_mid_attempt() -> None:
    async with Upstream(UpstreamBehaviour(name="slow", latency=1.0)) as slow:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{slow.port}"]}),
            config=meshlib.MeshConfig(timeout=0.2),
        ) as client:
            start = time.monotonic()
            with pytest.raises(meshlib.DeadlineExceeded) as info:
                await client.get("http://users/")
    assert time.monotonic() - start < 0.5
    assert isinstance(info.value, httpx.TimeoutException)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_a_per_try_timeout_counts_against_the_endpoint() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="hang", hang=True)) as hang,
        Upstream(UpstreamBehaviour(name="ok")) as ok,
    ):
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{hang.port}", f"127.0.0.1:{ok.port}"]}
            ),
            config=meshlib.MeshConfig(
                per_try_timeout=0.05,
                balancer="round-robin",
                accrual=meshlib.AccrualPolicy(consecutive_failures=2),
            ),
        ) as client:
            for _ in range(6):
                r = await client.get("http://users/")
                assert r.headers["x-upstream"] == "ok"
            eps = {e["address"]: e for e in client.mesh_state()["services"]["users"]["endpoints"]}
    assert eps[f"127.0.0.1:{hang.port}"]["state"] == "dead"
    assert eps[f"127.0.0.1:{ok.port}"]["state"] == "alive"


async def test_an_open_breaker_costs_no_attempt() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0, fail_status=500)) as bad,
        Upstream(UpstreamBehaviour(name="ok")) as ok,
    ):
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{bad.port}", f"127.0.0.1:{ok.port}"]}
            ),
            config=meshlib.MeshConfig(balancer="round-robin"),
        ) as client:
            for _ in range(10):
                await client.get("http://users/")
            dead_at = bad.stats().total
            assert dead_at == 5  # Finagle's five consecutive failures
            results = [(await client.get("http://users/")).status_code for _ in range(50)]
    assert results == [200] * 50
    assert bad.stats().total == dead_at


async def test_half_open_lets_exactly_one_of_ten_concurrent_calls_through() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", fail_fraction=1.0, fail_status=500)) as a,
        Upstream(UpstreamBehaviour(name="b", latency=0.05)) as b,
    ):
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
            ),
            config=meshlib.MeshConfig(
                balancer="round-robin",
                accrual=meshlib.AccrualPolicy(
                    consecutive_failures=1, backoff_min=0.05, backoff_max=0.05
                ),
            ),
        ) as client:
            while a.stats().total == 0:
                await client.get("http://users/")
            await asyncio.sleep(0.06)  # the backoff (real clock) has passed
            a.set_behaviour(UpstreamBehaviour(name="a", latency=0.05))
            a.reset_stats()
            await asyncio.gather(*(client.get("http://users/") for _ in range(10)))
            assert a.stats().total == 1
            state = {
                e["address"]: e["state"]
                for e in client.mesh_state()["services"]["users"]["endpoints"]
            }
    assert state[f"127.0.0.1:{a.port}"] == "alive"


async def test_panic_mode_balances_over_all_when_most_are_dead() -> None:
    servers = [
        Upstream(UpstreamBehaviour(name=n, fail_fraction=1.0, fail_status=500)) for n in "abcd"
    ]
    for s in servers:
        await s.start()
    try:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{s.port}" for s in servers]}),
            config=meshlib.MeshConfig(
                accrual=meshlib.AccrualPolicy(consecutive_failures=1, max_ejection_percent=100)
            ),
        ) as client:
            for _ in range(40):
                await client.get("http://users/")
            state = client.mesh_state()["services"]["users"]
            assert state["panic"] is True
            before = [s.stats().total for s in servers]
            for _ in range(40):
                r = await client.get("http://users/")
                assert r.status_code == 500
            after = [s.stats().total for s in servers]
    finally:
        for s in servers:
            await s.stop()
    assert sum(1 for x, y in zip(before, after, strict=True) if y > x) >= 3
