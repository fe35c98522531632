"""The deadline bounds the whole attempt, head and body reads included, in every engine.

A server that drips its response one byte at a time keeps each read short, so a per-read
timeout never fires; only a deadline over the whole attempt stops it (Finagle's total timeout,
Envoy's route timeout). The faults are real: a test upstream behind the fault proxy's
``bandwidth`` toxic, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import meshlib
from meshlib.engine import AsyncEngine, SyncEngine
from meshlib.extensions import DEADLINE
from meshlib.testing import FaultProxy
from meshlib.testing.faultproxy.proxy import bandwidth
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread

# 30 bytes a second: the ~100-byte response head takes about 3 s to arrive.
DRIP_KBPS = 0.03
DEADLINE_S = 0.5
SLACK_S = 0.25  # scheduling on a loaded 2-core machine, never seconds


@pytest.fixture
async def dripping() -> AsyncIterator[str]:
    async with Upstream(UpstreamBehaviour(name="drip")) as up:
        async with FaultProxy(("127.0.0.1", up.port)) as proxy:
            proxy.add(bandwidth(DRIP_KBPS))
            yield proxy.addr


@pytest.fixture
def dripping_sync() -> Iterator[str]:
    with UpstreamThread(UpstreamBehaviour(name="drip")) as up:
        with FaultProxy(("127.0.0.1", up.port)) as proxy:
            proxy.add(bandwidth(DRIP_KBPS))
            yield proxy.addr


def _request(addr: str) -> httpx.Request:
    request = httpx.Request("GET", f"http://{addr}/")
    request.extensions["timeout"] = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    request.extensions[DEADLINE] = time.monotonic() + DEADLINE_S
    return request


async def test_async_engine_bounds_a_dripping_head_by_the_deadline(dripping: str) -> None:
    engine = AsyncEngine()
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await engine.handle_async_request(_request(dripping))
    assert time.monotonic() - start < DEADLINE_S + SLACK_S
    await engine.aclose()


def test_sync_engine_bounds_a_dripping_head_by_the_deadline(dripping_sync: str) -> None:
    engine = SyncEngine()
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        engine.handle_request(_request(dripping_sync))
    assert time.monotonic() - start < DEADLINE_S + SLACK_S
    engine.close()


@pytest.mark.parametrize("engine", ["fast", "httpx"])
async def test_async_client_deadline_is_hard(dripping: str, engine: str) -> None:
    config = meshlib.MeshConfig(timeout=DEADLINE_S, engine=engine)
    discovery = meshlib.StaticDiscovery({"users": [dripping]})
    async with meshlib.AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(meshlib.DeadlineExceeded):
            await c.get("http://users/")
        assert time.monotonic() - start < DEADLINE_S + SLACK_S


@pytest.mark.parametrize("engine", ["fast", "httpx"])
def test_sync_client_deadline_is_hard(dripping_sync: str, engine: str) -> None:
    config = meshlib.MeshConfig(timeout=DEADLINE_S, engine=engine)
    discovery = meshlib.StaticDiscovery({"users": [dripping_sync]})
    with meshlib.MeshClient(discovery=discovery, config=config, timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(meshlib.DeadlineExceeded):
            c.get("http://users/")
        assert time.monotonic() - start < DEADLINE_S + SLACK_S


async def test_per_try_timeout_bounds_the_whole_attempt(dripping: str) -> None:
    config = meshlib.MeshConfig(
        per_try_timeout=DEADLINE_S, retry=meshlib.RetryPolicy(max_attempts=1)
    )
    discovery = meshlib.StaticDiscovery({"users": [dripping]})
    async with meshlib.AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as c:
        start = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            await c.get("http://users/")
        assert time.monotonic() - start < DEADLINE_S + SLACK_S


# -- a dropped half-read stream gives its pool slot back -------------------------------------


def _big() -> UpstreamBehaviour:
    return UpstreamBehaviour(name="big", body=b"x" * 2_000_000)


def test_sync_engine_frees_the_slot_of_a_dropped_half_read_stream() -> None:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    with UpstreamThread(_big()) as up:
        client = httpx.Client(transport=SyncEngine(limits=limits), timeout=2.0)
        for _ in range(3):
            with client.stream("GET", f"http://127.0.0.1:{up.port}/") as r:
                pass  # entered and left: closed, fine
        for _ in range(3):
            r = client.send(
                client.build_request("GET", f"http://127.0.0.1:{up.port}/"), stream=True
            )
            next(r.iter_raw(1024))
            del r  # dropped half-read, never closed
            gc.collect()
        # Two leaked slots would make this a PoolTimeout.
        assert client.get(f"http://127.0.0.1:{up.port}/", timeout=1.0).status_code == 200
        client.close()


async def test_async_engine_frees_the_slot_of_a_dropped_half_read_stream() -> None:
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with Upstream(_big()) as up:
        engine = AsyncEngine(limits=limits)
        url = f"http://127.0.0.1:{up.port}/"
        for _ in range(3):
            response = await engine.handle_async_request(httpx.Request("GET", url))
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            await stream.__aiter__().__anext__()  # type: ignore[attr-defined]
            del response, stream  # dropped half-read, never closed
            gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)
        client = httpx.AsyncClient(transport=engine, timeout=1.0)
        assert (await client.get(url)).status_code == 200
        await client.aclose()
        await asyncio.sleep(0.05)  # let the aborted transports finish closing on this loop


# -- what an operator sees ------------------------------------------------------------------


async def test_mesh_state_and_metrics_show_the_bound_and_its_expiries(dripping: str) -> None:
    from meshlib.admin.metrics import render_prometheus

    config = meshlib.MeshConfig(timeout=DEADLINE_S, per_try_timeout=2.0)
    discovery = meshlib.StaticDiscovery({"users": [dripping]})
    async with meshlib.AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as c:
        with pytest.raises(meshlib.DeadlineExceeded):
            await c.get("http://users/")
        state = c.mesh_state()
    assert state["services"]["users"]["deadlines"] == {
        "timeout_s": DEADLINE_S,
        "per_try_timeout_s": 2.0,
        "exceeded": 1,
    }
    text = render_prometheus(state)
    assert 'meshlib_deadline_exceeded_total{service="users"} 1' in text
