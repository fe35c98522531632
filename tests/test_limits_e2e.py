"""Per-service limits end to end, and the mesh_state() snapshot."""

import asyncio
import gc
import json

import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour


async def test_rate_limit_fails_fast_with_rate_limited() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        config = meshlib.MeshConfig(
            limits={"users": meshlib.LimitPolicy(rate=5, burst=2, wait=False)}
        )
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}),
            config=config,
            clock=ManualClock(),
        ) as client:
            await client.get("http://users/")
            await client.get("http://users/")
            with pytest.raises(meshlib.RateLimited, match="rate limit of 5/s"):
                await client.get("http://users/")
    assert up.stats().total == 2


async def test_rate_limit_waits_within_bounds() -> None:
    clock = ManualClock()
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        config = meshlib.MeshConfig(limits={"users": meshlib.LimitPolicy(rate=10, burst=1)})
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}),
            config=config,
            clock=clock,
        ) as client:
            for _ in range(3):
                await client.get("http://users/")
    assert clock.slept == pytest.approx([0.1, 0.1])


async def test_concurrency_limit_bulkhead() -> None:
    async with Upstream(UpstreamBehaviour(name="slow", latency=0.1)) as up:
        config = meshlib.MeshConfig(
            limits={"users": meshlib.LimitPolicy(max_in_flight=2, wait=False)}
        )
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}),
            config=config,
        ) as client:
            results = await asyncio.gather(
                *(client.get("http://users/") for _ in range(5)), return_exceptions=True
            )
            refused = [r for r in results if isinstance(r, meshlib.RateLimited)]
            assert len(refused) == 3
            state = client.mesh_state()["services"]["users"]["limits"]
            assert state["in_flight"] == 0
            assert state["concurrency_refused"] == 3
            # With waiting allowed (per call), all get through in turn.
            results = await asyncio.gather(
                *(
                    client.get("http://users/", extensions={"mesh": {"limit_wait": True}})
                    for _ in range(4)
                )
            )
            assert all(r.status_code == 200 for r in results)


async def test_mesh_state_is_json_and_complete() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]})
        ) as client:
            await client.get("http://users/")
            state = client.mesh_state()
    json.dumps(state)
    svc = state["services"]["users"]
    assert svc["balancer"] == "p2c-peak-ewma"
    assert svc["budget"]["calls_in_window"] == 1
    (ep,) = svc["endpoints"]
    assert set(ep) >= {
        "address",
        "ewma_ms",
        "in_flight",
        "state",
        "next_probe_in_s",
        "success_rate",
        "failure_score",
    }
    assert ep["success_rate"] == 1.0


async def test_a_response_dropped_half_read_gives_its_slot_back() -> None:
    """A caller that stops reading a streamed body and drops the response without closing it
    must not hold the endpoint's in-flight count or a concurrency slot until the cyclic garbage
    collector runs (httpx's response sits in a reference cycle)."""
    body = UpstreamBehaviour(name="big", body=b"x" * 400_000)
    async with Upstream(body) as up:
        limits = {"users": meshlib.LimitPolicy(max_in_flight=1, wait=False)}
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}),
            config=meshlib.MeshConfig(limits=limits),
        ) as client:
            request = client.build_request("GET", "http://users/")
            response = await client.send(request, stream=True)
            async for _ in response.aiter_raw():
                break
            del response
            for _ in range(5):
                await asyncio.sleep(0.01)
            (endpoint,) = client.mesh_state()["services"]["users"]["endpoints"]
            assert endpoint["in_flight"] == 0
            assert (await client.get("http://users/")).status_code == 200
            # Once collected, the abandoned connection is released too (no socket left open).
            gc.collect()
            await asyncio.sleep(0.01)
