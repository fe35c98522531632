"""Worker-side tight loop for the ``traffic`` scenario: a discovery chain's cost per request.

``traffic_loop`` times ``AsyncMeshTransport.handle_async_request`` over an inner transport
that answers at once (no I/O; httpx's client layer, the same for both services, is left out
so its noise does not drown a few microseconds), calling a service whose discovery chain has
a router (three routes: a path prefix, a header and a query match, plus the default), a 90/10
splitter and a resolver with two subsets by ``Service.Meta``, against a plain service with the
same three endpoints, in short alternating batches in one process. The difference is what
traffic management adds per request: route matching, the split draw, the subset lookup, the
route's policy, and the extra ``outcome`` fields. Nothing is sent anywhere.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

import meshlib

__all__ = ["traffic_loop"]

Spec = dict[str, Any]

ENTRIES: list[dict[str, Any]] = [
    {
        "Kind": "service-resolver",
        "Name": "shop",
        "DefaultSubset": "v1",
        "Subsets": {
            "v1": {"Filter": "Service.Meta.version == v1"},
            "v2": {"Filter": "Service.Meta.version == v2"},
        },
    },
    {
        "Kind": "service-splitter",
        "Name": "shop",
        "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}],
    },
    {
        "Kind": "service-router",
        "Name": "shop",
        "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"ServiceSubset": "v1"}},
            {
                "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "yes"}]}},
                "Destination": {"ServiceSubset": "v2"},
            },
            {
                "Match": {"HTTP": {"QueryParam": [{"Name": "beta", "Present": True}]}},
                "Destination": {"ServiceSubset": "v2"},
            },
        ],
    },
]


class _Instant(httpx.AsyncBaseTransport):
    """Answers every request at once with a two-byte body (a mesh-native inner transport)."""

    mesh_native = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"), request=request)


async def _batch(mesh: meshlib.AsyncMeshTransport, request: httpx.Request, n: int) -> float:
    """``n`` calls of the transport itself (the request is reused: the pipeline restores it
    after each call), so httpx's client layer, identical for both services, adds no noise."""
    c0 = time.process_time()
    for _ in range(n):
        response = await mesh.handle_async_request(request)
        await response.aread()
        await response.aclose()
    return (time.process_time() - c0) / n * 1e6


def _endpoints() -> list[dict[str, Any]]:
    return [
        {"address": f"127.0.0.1:{8080 + i}", "meta": {"version": v}}
        for i, v in enumerate(("v1", "v1", "v2"))
    ]


async def _measure(spec: Spec) -> Spec:
    discovery = meshlib.StaticDiscovery(
        {"plain": _endpoints(), "shop": _endpoints()}, config_entries=ENTRIES
    )
    mesh = meshlib.AsyncMeshTransport(
        discovery=discovery, config=meshlib.MeshConfig(), transport=_Instant()
    )
    n = int(spec.get("batch", 2000))
    plain = httpx.Request("GET", "http://plain/items")
    shop = httpx.Request("GET", "http://shop/items")
    async with mesh:
        await _batch(mesh, plain, n)
        await _batch(mesh, shop, n)
        diffs, plains, chains = [], [], []
        for _ in range(int(spec.get("pairs", 9))):
            p = await _batch(mesh, plain, n)
            c = await _batch(mesh, shop, n)
            plains.append(p)
            chains.append(c)
            diffs.append(c - p)
        r = await mesh.handle_async_request(shop)
        await r.aread()
        assert r.extensions["mesh"]["target"].endswith(".shop.default.default.dc1")
    diffs.sort()
    return {
        "us_per_request": diffs[len(diffs) // 2],
        "min_diff_us": min(chains) - min(plains),
        "plain_us": sorted(plains)[len(plains) // 2],
        "chain_us": sorted(chains)[len(chains) // 2],
    }


def traffic_loop(spec: Spec) -> Spec:
    """CPU µs a router + splitter + resolver chain adds per request over a plain service
    (median of ``pairs`` back-to-back batch pairs of ``batch`` requests)."""
    return asyncio.run(_measure(spec))
