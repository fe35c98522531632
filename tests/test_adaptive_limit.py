"""The adaptive concurrency limit (Vegas): it shrinks under rising latency and refuses fast,
and it grows back when latency recovers; first as pure logic on a manual clock, then end to end
against upstreams on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import meshlib
from meshlib.clock import ManualClock
from meshlib.limit.adaptive import AdaptiveLimit, AdaptivePolicy
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


def _round(limit: AdaptiveLimit, clock: ManualClock, rtt: float, *, dropped: bool = False) -> int:
    """Fill the limit, let every call take ``rtt``, release them all; the permits refused."""
    permits = []
    refused = 0
    for _ in range(limit.limit + 2):
        p = limit.try_acquire()
        if p is None:
            refused += 1
        else:
            permits.append(p)
    clock.advance(rtt)
    for p in permits:
        p.dropped = dropped
        p.release()
    return refused


def _limit(**kw: int) -> tuple[AdaptiveLimit, ManualClock]:
    clock = ManualClock()
    policy = AdaptivePolicy(probe=10_000, **kw)  # no probe resets during these short runs
    return AdaptiveLimit(policy, clock, random.Random(1)), clock


def test_the_limit_shrinks_under_rising_latency_and_grows_back() -> None:
    limit, clock = _limit(initial=20, min_limit=2, max_limit=200)
    for _ in range(5):
        _round(limit, clock, 0.010)
    grown = limit.limit
    assert grown > 20  # no queueing: it probes for more
    assert limit.rtt_noload == pytest.approx(0.010)
    for _ in range(10):
        refused = _round(limit, clock, 0.050)  # five times the no-load latency: a queue
        assert refused >= 2  # above the limit, refused at once
    shrunk = limit.limit
    assert shrunk < grown
    for _ in range(20):
        _round(limit, clock, 0.010)
    assert limit.limit > shrunk


def test_a_drop_shrinks_the_limit() -> None:
    limit, clock = _limit(initial=50, min_limit=1, max_limit=100)
    _round(limit, clock, 0.010)  # sets the no-load latency
    before = limit.limit
    _round(limit, clock, 0.010, dropped=True)
    assert limit.limit < before
    assert limit.dropped > 0


def test_an_idle_limit_does_not_grow() -> None:
    limit, clock = _limit(initial=20)
    for _ in range(50):
        p = limit.try_acquire()
        assert p is not None
        clock.advance(0.01)
        p.release()  # one in flight out of 20: app-limited
    assert limit.limit == 20


def test_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        AdaptivePolicy(min_limit=10, max_limit=5)
    with pytest.raises(ValueError, match="initial"):
        AdaptivePolicy(initial=500, max_limit=100)


def test_configuration_from_the_environment() -> None:
    config = meshlib.MeshConfig.from_env({"MESH_ADAPTIVE_CONCURRENCY": "users=on;orders=5:300"})
    assert config.limits["users"].adaptive == AdaptivePolicy()
    orders = config.limits["orders"].adaptive
    assert orders is not None
    assert (orders.min_limit, orders.max_limit, orders.initial) == (5, 300, 20)
    with pytest.raises(meshlib.ConfigError, match="MESH_ADAPTIVE_CONCURRENCY for users"):
        meshlib.MeshConfig.from_env({"MESH_ADAPTIVE_CONCURRENCY": "users=lots"})
    with pytest.raises(meshlib.ConfigError, match="min <= max"):
        meshlib.MeshConfig.from_env({"MESH_ADAPTIVE_CONCURRENCY": "users=9:3"})


# -- end to end --------------------------------------------------------------------------------


def _client(port: int, policy: AdaptivePolicy, **kw: object) -> meshlib.AsyncMeshClient:
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{port}"]}),
        config=meshlib.MeshConfig(limits={"users": meshlib.LimitPolicy(adaptive=policy)}),
        **kw,  # type: ignore[arg-type]
    )


async def test_calls_above_the_limit_are_refused_fast_with_rate_limited() -> None:
    async with Upstream(UpstreamBehaviour(name="slow", latency=0.3)) as up:
        async with _client(up.port, AdaptivePolicy(initial=4, max_limit=50)) as client:
            started = time.monotonic()
            refused_at: list[float] = []

            async def call() -> httpx.Response:
                try:
                    return await client.get("http://users/")
                finally:
                    refused_at.append(time.monotonic() - started)

            results = await asyncio.gather(*(call() for _ in range(10)), return_exceptions=True)
            state = client.mesh_state()["services"]["users"]["limits"]["adaptive"]
    refused = [r for r in results if isinstance(r, meshlib.RateLimited)]
    assert len(refused) == 6
    assert all("adaptive concurrency limit of 4" in str(r) for r in refused)
    assert [r.status_code for r in results if isinstance(r, httpx.Response)] == [200] * 4
    assert up.stats().total == 4  # the refused never left the client
    refused_at.sort()
    assert refused_at[5] < 0.2  # the first six ended at once, not after the 300 ms in the queue
    assert state["refused"] == 6
    assert state["in_flight"] == 0
    assert state["algorithm"] == "vegas"


async def test_the_limit_follows_the_upstream_latency_end_to_end() -> None:
    async with Upstream(UpstreamBehaviour(name="a", latency=0.002)) as up:
        policy = AdaptivePolicy(initial=10, min_limit=2, max_limit=40, probe=10_000)
        async with _client(up.port, policy) as client:

            def limit() -> int:
                state = client.mesh_state()["services"]["users"]["limits"]["adaptive"]
                return int(state["limit"])

            async def burst() -> None:
                n = limit()
                await asyncio.gather(
                    *(client.get("http://users/") for _ in range(n)), return_exceptions=True
                )

            await client.get("http://users/")
            for _ in range(15):  # bounded: 15 bursts at about 2 ms
                await burst()
            fast = limit()
            up.set_behaviour(UpstreamBehaviour(name="a", latency=0.04))
            for _ in range(40):  # bounded: until the limit has come down
                await burst()
                if limit() < fast // 2:
                    break
            slow = limit()
            assert slow < fast
            up.set_behaviour(UpstreamBehaviour(name="a", latency=0.002))
            for _ in range(60):
                await burst()
                if limit() > slow + 4:
                    break
            assert limit() > slow


def test_the_sync_client_refuses_above_the_limit_from_threads() -> None:
    # Every thread waits at a barrier, so all five reach the limit while the first two are in
    # flight; without it a thread scheduled late on a busy machine can arrive after a slow call
    # has finished and be let through, which says nothing about the limit.
    with UpstreamThread(UpstreamBehaviour(name="slow", latency=0.6)) as up:
        config = meshlib.MeshConfig(
            limits={"users": meshlib.LimitPolicy(adaptive=AdaptivePolicy(initial=2))}
        )
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}), config=config
        ) as client:
            barrier = threading.Barrier(5, timeout=10)

            def call() -> tuple[str, float]:
                barrier.wait()
                started = time.monotonic()
                try:
                    client.get("http://users/")
                    outcome = "ok"
                except meshlib.RateLimited:
                    outcome = "refused"
                return outcome, time.monotonic() - started

            with concurrent.futures.ThreadPoolExecutor(5) as pool:
                results = list(pool.map(lambda _: call(), range(5)))
    refused = [t for outcome, t in results if outcome == "refused"]
    assert len(refused) == 3
    assert max(refused) < 0.3  # at once, not after the 600 ms calls ahead of them
    assert up.stats().total == 2


def test_the_sync_client_applies_the_limit_too() -> None:
    with UpstreamThread(UpstreamBehaviour(name="a")) as up:
        config = meshlib.MeshConfig(
            limits={"users": meshlib.LimitPolicy(adaptive=AdaptivePolicy(initial=3))}
        )
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}), config=config
        ) as client:
            for _ in range(5):
                assert client.get("http://users/").status_code == 200
            state = client.mesh_state()["services"]["users"]["limits"]["adaptive"]
    assert state["in_flight"] == 0
    assert state["rtt_noload_ms"] > 0


async def test_the_limit_and_hedges_show_in_the_admin_metrics_and_page() -> None:
    from meshlib.admin import start_admin

    async with (
        Upstream(UpstreamBehaviour(name="a")) as a,
        Upstream(UpstreamBehaviour(name="b")) as b,
    ):
        config = meshlib.MeshConfig(
            limits={"users": meshlib.LimitPolicy(adaptive=AdaptivePolicy(initial=7))},
            hedges={"users": meshlib.HedgePolicy(delay=0.05)},
            hedge_budget=meshlib.HedgeBudgetPolicy(percent=1.0),
        )
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
            ),
            config=config,
            clock=ManualClock(),  # the hedge timer fires at once: every call is hedged
        ) as client:
            for _ in range(3):
                await client.get("http://users/")
            async with await start_admin(client, addr=":0") as admin:
                async with httpx.AsyncClient(trust_env=False) as http:
                    text = (await http.get(f"{admin.url}/mesh/metrics")).text
                    page = (await http.get(f"{admin.url}/")).text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines['meshlib_concurrency_limit{service="users"}']) >= 7
    assert float(lines['meshlib_concurrency_limit_in_flight{service="users"}']) == 0
    assert float(lines['meshlib_concurrency_limit_refused_total{service="users"}']) == 0
    assert float(lines['meshlib_hedges_total{service="users"}']) == 3
    assert "concurrency limit" in page
    assert "hedges sent / won" in page


async def test_the_limit_is_an_opentelemetry_gauge(metric_reader: InMemoryMetricReader) -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        async with _client(up.port, AdaptivePolicy(initial=11)) as client:
            await client.get("http://users/")
            limit = client.mesh_state()["services"]["users"]["limits"]["adaptive"]["limit"]
            data = metric_reader.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "mesh.client.concurrency_limit"
        for p in m.data.data_points
    ]
    assert [(dict(p.attributes), p.value) for p in points] == [({"mesh.service": "users"}, limit)]
