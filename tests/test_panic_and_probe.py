"""Panic mode spreads load when most endpoints are ejected; a lone endpoint is probed and revives.

Finagle and Envoy: when more than half of a service's endpoints are unhealthy, balance over all
of them, because the few survivors would be knocked over too. End to end against real upstreams
on 127.0.0.1, with the clock injected so backoffs pass without sleeping.
"""

from __future__ import annotations

from collections import Counter

import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour

FAILING = UpstreamBehaviour(name="failing", fail_fraction=1.0)


def _client(addrs: list[str], clock: ManualClock, **config: object) -> meshlib.AsyncMeshClient:
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": addrs}),
        config=meshlib.MeshConfig(retry=meshlib.RetryPolicy(max_attempts=1), **config),  # type: ignore[arg-type]
        clock=clock,
        timeout=5.0,
    )


async def _served(ups: list[Upstream]) -> Counter[str]:
    return Counter({u.behaviour.name: u.stats().total for u in ups})


@pytest.mark.parametrize("balancer", ["p2c-peak-ewma", "p2c-least-loaded", "round-robin"])
async def test_three_of_four_ejected_spreads_over_all(balancer: str) -> None:
    clock = ManualClock()
    behaviours = [UpstreamBehaviour(name=f"bad{i}", fail_fraction=1.0) for i in range(3)]
    behaviours.append(UpstreamBehaviour(name="good"))
    ups = [Upstream(b) for b in behaviours]
    for u in ups:
        await u.start()
    try:
        async with _client([f"127.0.0.1:{u.port}" for u in ups], clock, balancer=balancer) as c:
            for _ in range(200):  # until accrual has ejected the three failing ones
                await c.get("http://users/")
                svc = c.mesh_state()["services"]["users"]
                if svc["dead"] >= 3:
                    break
            svc = c.mesh_state()["services"]["users"]
            assert svc["dead"] == 3
            assert svc["panic"] is True
            for u in ups:
                u.reset_stats()
            for _ in range(400):
                await c.get("http://users/")
    finally:
        for u in ups:
            await u.stop()
    served = await _served(ups)
    # Spread, not concentrated: the survivor takes about a quarter, never almost all.
    assert served["good"] < 400 * 0.5, served
    for i in range(3):
        assert served[f"bad{i}"] > 400 * 0.1, served


async def test_every_endpoint_ejected_still_spreads() -> None:
    clock = ManualClock()
    ups = [Upstream(UpstreamBehaviour(name=f"bad{i}", fail_fraction=1.0)) for i in range(3)]
    for u in ups:
        await u.start()
    try:
        async with _client([f"127.0.0.1:{u.port}" for u in ups], clock) as c:
            for _ in range(100):
                await c.get("http://users/")
            assert c.mesh_state()["services"]["users"]["dead"] == 3
            for u in ups:
                u.reset_stats()
            for _ in range(300):
                await c.get("http://users/")
    finally:
        for u in ups:
            await u.stop()
    served = await _served(ups)
    assert all(n > 300 * 0.15 for n in served.values()), served


@pytest.mark.parametrize("balancer", ["p2c-peak-ewma", "round-robin"])
async def test_a_lone_endpoint_is_probed_and_revives(balancer: str) -> None:
    clock = ManualClock()
    async with Upstream(FAILING) as up:
        async with _client([f"127.0.0.1:{up.port}"], clock, balancer=balancer) as c:
            for _ in range(10):
                await c.get("http://users/")
            ep = c.mesh_state()["services"]["users"]["endpoints"][0]
            assert ep["state"] == "dead"
            up.set_behaviour(UpstreamBehaviour(name="healed"))
            clock.advance(ep["next_probe_in_s"] + 0.001)
            for _ in range(50):
                assert (await c.get("http://users/")).status_code == 200
            svc = c.mesh_state()["services"]["users"]
    assert svc["endpoints"][0]["state"] == "alive"  # the probe went through and revived it
    assert svc["panic"] is False
    assert svc["dead"] == 0
