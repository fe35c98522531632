"""Worker-side tight loop for the ``overhead`` scenario: the mesh layer over a no-op transport.

``mesh_layer_loop`` times a stock ``httpx.AsyncClient`` over ``AsyncMeshTransport`` whose inner
transport answers at once with a ready response (no I/O, no sockets), against the same client
over that no-op transport alone, batch by batch in one process. Their difference is exactly the
mesh layer's own code (addressing, discovery lookup, P2C pick, call and attempt bookkeeping,
budget, accrual, load tracking, the response-stream wrapper) with the engine and the network
taken out, so it resolves a microsecond where the end-to-end paired difference, which carries
two processes' worth of socket and scheduling noise, cannot. Nothing is sent anywhere.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

import meshlib

__all__ = ["mesh_layer_loop"]

Spec = dict[str, Any]


class _Instant(httpx.AsyncBaseTransport):
    """Answers every request at once with a two-byte body, as meshlib's engine would hand it
    over (it takes attempt headers from the request's extensions)."""

    mesh_native = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"), request=request)


async def _batch(client: httpx.AsyncClient, url: str, n: int) -> float:
    c0 = time.process_time()
    for _ in range(n):
        response = await client.get(url)
        await response.aread()
        await response.aclose()
    return (time.process_time() - c0) / n * 1e6


async def _measure(spec: Spec) -> Spec:
    mesh_config = meshlib.MeshConfig(**spec.get("config", {}))
    inner = _Instant()
    mesh = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery(
            {"svc": ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"]}
        ),
        config=mesh_config,
        transport=inner,
    )
    n = int(spec.get("batch", 2000))
    async with (
        httpx.AsyncClient(transport=_Instant()) as bare,
        httpx.AsyncClient(transport=mesh) as meshed,
    ):
        await _batch(bare, "http://127.0.0.1:8080/", n)
        await _batch(meshed, "http://svc/", n)
        diffs, bares, meshes = [], [], []
        for _ in range(int(spec.get("pairs", 15))):
            b = await _batch(bare, "http://127.0.0.1:8080/", n)
            m = await _batch(meshed, "http://svc/", n)
            bares.append(b)
            meshes.append(m)
            diffs.append(m - b)
    diffs.sort()
    return {
        "us_per_request": diffs[len(diffs) // 2],
        "bare_us": sorted(bares)[len(bares) // 2],
        "mesh_us": sorted(meshes)[len(meshes) // 2],
    }


def mesh_layer_loop(spec: Spec) -> Spec:
    """CPU µs the mesh layer adds per request over a no-op inner transport (median of
    ``pairs`` back-to-back batch pairs of ``batch`` requests)."""
    return asyncio.run(_measure(spec))
