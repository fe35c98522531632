"""The client variants under comparison, built the same way in every worker process.

Why one factory: a ratio is only fair if the variants differ in the one thing being compared.
Every variant here gets the same timeout and the same connection limits, and the non-mesh
variants spread requests over the replicas by client-side round robin (``urls[i % n]``), so
the baseline does the same job as the mesh minus discovery and balancing.

Variant names (``client`` in a worker spec):

* ``httpx`` - ``httpx.AsyncClient()`` / ``httpx.Client()`` as shipped (httpcore + h11);
* ``engine`` - ``httpx.AsyncClient(transport=AsyncEngine())`` / the ``SyncEngine`` twin:
  meshlib's inner HTTP/1.1 engine with no mesh around it;
* ``aiohttp`` - ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())``;
* ``mesh-transport`` - a stock ``httpx.AsyncClient`` over ``meshlib.AsyncMeshTransport``: the
  mesh layer alone, under exactly the client layer the ``engine`` variant uses;
* ``mesh`` - ``AsyncMeshClient`` / ``MeshClient`` with the replicas as one static service,
  configured by ``MeshOptions``: the library's defaults unless a scenario turns retries or
  failure accrual off (to measure the balancer alone, as the issue's targets ask).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import httpx

import meshlib
from meshlib.engine import AsyncEngine, SyncEngine

__all__ = [
    "ASYNC_CLIENTS",
    "LIMITS",
    "SERVICE",
    "SYNC_CLIENTS",
    "TIMEOUT",
    "MeshOptions",
    "aiohttp_available",
    "make_async_client",
    "make_sync_client",
    "mesh_config",
]

TIMEOUT = httpx.Timeout(10.0)
# httpx's default limits (100 connections, 20 kept alive), given explicitly to every variant.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
SERVICE = "svc"
ASYNC_CLIENTS = ("httpx", "engine", "aiohttp", "mesh-transport", "mesh")
SYNC_CLIENTS = ("httpx", "engine", "mesh")

NextUrl = Callable[[], str]
MeshOptions = dict[str, bool]
"""``{"retries": False}`` sets ``max_attempts=1``; ``{"accrual": False}`` disables accrual."""


def aiohttp_available() -> bool:
    """True if the optional httpx-aiohttp reference transport is installed."""
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _round_robin(urls: Sequence[str]) -> NextUrl:
    return itertools.cycle([u.rstrip("/") + "/" for u in urls]).__next__


def mesh_config(balancer: str, options: MeshOptions | None = None) -> meshlib.MeshConfig:
    """The ``MeshConfig`` for a mesh variant: defaults, minus what ``options`` turns off."""
    opts = options or {}
    kw: dict[str, Any] = {"balancer": balancer or "p2c-peak-ewma", "engine": "fast"}
    if opts.get("retries") is False:
        kw["retry"] = meshlib.RetryPolicy(max_attempts=1)
    if opts.get("accrual") is False:
        kw["accrual"] = meshlib.AccrualPolicy(enabled=False)
    return meshlib.MeshConfig(**kw)


def _mesh_parts(
    urls: Sequence[str], balancer: str, options: MeshOptions | None
) -> tuple[dict[str, Any], NextUrl]:
    addresses = [u.removeprefix("http://").rstrip("/") for u in urls]
    kw: dict[str, Any] = {
        "discovery": meshlib.StaticDiscovery({SERVICE: addresses}),
        "config": mesh_config(balancer, options),
    }
    url = f"http://{SERVICE}/"
    return kw, lambda: url


def make_async_client(
    client: str,
    urls: Sequence[str],
    balancer: str = "p2c-peak-ewma",
    mesh: MeshOptions | None = None,
) -> tuple[httpx.AsyncClient, NextUrl]:
    """An async client of variant ``client`` and the function giving each request's URL."""
    common: dict[str, Any] = {"timeout": TIMEOUT, "limits": LIMITS}
    if client == "mesh":
        kw, next_url = _mesh_parts(urls, balancer, mesh)
        return meshlib.AsyncMeshClient(**kw, **common), next_url
    if client == "mesh-transport":
        kw, next_url = _mesh_parts(urls, balancer, mesh)
        mesh_transport = meshlib.AsyncMeshTransport(**kw, limits=LIMITS)
        return httpx.AsyncClient(transport=mesh_transport, **common), next_url
    if client == "httpx":
        return httpx.AsyncClient(**common), _round_robin(urls)
    if client == "engine":
        return httpx.AsyncClient(transport=AsyncEngine(limits=LIMITS), **common), _round_robin(urls)
    if client == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=LIMITS)
        return httpx.AsyncClient(transport=transport, **common), _round_robin(urls)
    raise ValueError(f"unknown async client variant {client!r}; use one of {ASYNC_CLIENTS}")


def make_sync_client(
    client: str,
    urls: Sequence[str],
    balancer: str = "p2c-peak-ewma",
    mesh: MeshOptions | None = None,
) -> tuple[httpx.Client, NextUrl]:
    """A sync client of variant ``client`` and the function giving each request's URL."""
    common: dict[str, Any] = {"timeout": TIMEOUT, "limits": LIMITS}
    if client == "mesh":
        kw, next_url = _mesh_parts(urls, balancer, mesh)
        return meshlib.MeshClient(**kw, **common), next_url
    if client == "httpx":
        return httpx.Client(**common), _round_robin(urls)
    if client == "engine":
        return httpx.Client(transport=SyncEngine(limits=LIMITS), **common), _round_robin(urls)
    raise ValueError(f"unknown sync client variant {client!r}; use one of {SYNC_CLIENTS}")
