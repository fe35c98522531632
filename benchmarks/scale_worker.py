"""Worker-side measurements of the mesh's routing state: memory per endpoint and pick time.

Why in-process and without sockets: memory and pick cost are properties of the router's data
structures, not of I/O. Addresses are 127.0.0.1 with distinct ports, never connected to.

* **Memory**: ``tracemalloc`` counts every byte allocated (and still alive) while the
  ``StaticDiscovery`` is built from the declared services and while an ``AsyncMeshTransport``
  resolves every service once, so each endpoint has its routing state (``EndpointState``,
  load metric, ``EndpointSet``). The declared input itself (the user's mapping of strings) is
  built before tracing starts. Total / number of endpoints is the figure.
* **Pick time**: ``router.pick(service_state)`` in a tight loop, in batches, bounded by count
  and time; endpoints are given unequal, realistic loads first so P2C compares real numbers.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from typing import Any

import meshlib
from meshlib.discovery.base import Target

__all__ = ["scale_memory", "scale_pick"]

Spec = dict[str, Any]
_BASE_PORT = 20000


def _declared(services: int, per_service: int) -> dict[str, list[str]]:
    return {
        f"svc{i}": [f"127.0.0.1:{_BASE_PORT + i * per_service + j}" for j in range(per_service)]
        for i in range(services)
    }


def scale_memory(spec: Spec) -> Spec:
    """Bytes of mesh state for ``services`` x ``endpoints`` declared endpoints."""
    services, per = int(spec["services"]), int(spec["endpoints"])
    declared = _declared(services, per)
    names = list(declared)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        discovery = meshlib.StaticDiscovery(declared)
        gc.collect()
        after_discovery = tracemalloc.get_traced_memory()[0]
        transport = meshlib.AsyncMeshTransport(
            discovery=discovery, config=meshlib.MeshConfig(balancer=spec["balancer"])
        )
        router = transport.router
        for name in names:
            target = router.target(name)
            assert target is not None, name
            state = router.service(target)
            assert state is not None, name
            assert len(state.eps) == per, name
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - base
        top = _top_sites(tracemalloc.take_snapshot(), services * per)
    finally:
        tracemalloc.stop()
    count = services * per
    asyncio.run(transport.aclose())
    return {
        "endpoints": count,
        "total_bytes": total,
        "discovery_bytes": after_discovery - base,
        "router_bytes": total - (after_discovery - base),
        "bytes_per_endpoint": total / count,
        "top_sites": top,
    }


def _top_sites(snapshot: tracemalloc.Snapshot, count: int, limit: int = 8) -> list[str]:
    """The allocation sites holding the most of the state, as bytes per endpoint."""
    stats = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    out = []
    for stat in stats.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        name = frame.filename
        where = "meshlib/" + name.rsplit("/meshlib/", 1)[1] if "/meshlib/" in name else name
        out.append(
            f"{where}:{frame.lineno} {stat.size / count:.0f} B/endpoint ({stat.count} blocks)"
        )
    return out


def _load_up(states: Any, rng: random.Random, now: float) -> None:
    """Give every endpoint a few finished requests with different round-trip times."""
    for st in states:
        for _ in range(3):
            st.metric.start()
            st.metric.finish(now, rng.uniform(0.001, 0.005), failed=False)


def scale_pick(spec: Spec) -> Spec:
    """Microseconds per ``router.pick`` over one service of ``endpoints`` endpoints."""
    size = int(spec["endpoints"])
    transport = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery(_declared(1, size)),
        config=meshlib.MeshConfig(balancer=spec["balancer"]),
        rng=random.Random(1),
    )
    router = transport.router
    state = router.service(Target("svc0"))
    assert state is not None
    assert len(state.eps) == size
    _load_up(state.eps.states, random.Random(2), router.clock.now())
    pick = router.pick
    for _ in range(int(spec["warmup"])):
        pick(state)
    batch = 1000
    limit = int(spec["picks"])
    done = 0
    started = time.perf_counter()
    deadline = started + float(spec["max_seconds"])
    while done < limit and time.perf_counter() < deadline:
        for _ in range(batch):
            pick(state)
        done += batch
    elapsed = time.perf_counter() - started
    asyncio.run(transport.aclose())
    return {"endpoints": size, "picks": done, "us_per_pick": elapsed / done * 1e6}
