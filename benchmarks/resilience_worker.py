"""Worker-side measurements for the resilience, Consul and OpenTelemetry scenarios.

Each function runs inside one fresh worker process (``python -m benchmarks.worker``), like the
loops in ``benchmarks.loops``:

* ``mesh_open_loop`` - open loop through ``AsyncMeshClient`` at a fixed rate, reading every
  Python upstream's request counter (``GET /control``) before and after the measured run, so
  the extra upstream load of retries and each replica's share are counted where they land;
* ``consul_change`` / ``consul_idle`` / ``consul_outage`` - an in-process ``FakeConsul`` with
  the upstreams registered, a client discovering them through it, and one event (a
  deregistration, a quiet period, an outage);

The OpenTelemetry measurements are in ``otel_worker``.

Every loop is bounded by a request count or a duration; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

import meshlib
from benchmarks.model import nearest_rank
from meshlib.demo.loadgen import LoadResult, run_open_loop

__all__ = [
    "consul_change",
    "consul_idle",
    "consul_outage",
    "mesh_open_loop",
]

Spec = dict[str, Any]
SERVICE = "svc"


def upstream_totals(urls: Sequence[str]) -> dict[str, int]:
    """Requests each Python upstream has received so far (its ``/control`` counter)."""
    out: dict[str, int] = {}
    for url in urls:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5.0)
        try:
            conn.request("GET", "/control")
            doc = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        out[str(doc["behaviour"]["name"])] = int(doc["stats"]["total"])
    return out


def _mesh_config(spec: Spec) -> meshlib.MeshConfig:
    kw: dict[str, Any] = {
        "discovery": "static",
        "static_endpoints": {SERVICE: [u.removeprefix("http://") for u in spec["urls"]]},
    }
    if spec.get("per_try_timeout") is not None:
        kw["per_try_timeout"] = float(spec["per_try_timeout"])
    return meshlib.MeshConfig(**kw)


def _summary(result: LoadResult) -> Spec:
    ordered = sorted(result.latencies)
    return {
        "sent": result.sent,
        "p50_ms": nearest_rank(ordered, 50) * 1e3,
        "p99_ms": nearest_rank(ordered, 99) * 1e3,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1e3,
        "served_by": dict(result.served_by),
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "errors": dict(result.errors),
        "dropped": result.dropped,
        "duration_s": result.duration,
    }


async def _mesh_open_loop(spec: Spec) -> Spec:
    rate = float(spec["rate"])
    urls = list(spec["urls"])
    async with meshlib.AsyncMeshClient(config=_mesh_config(spec), timeout=10.0) as client:

        async def send() -> httpx.Response:
            return await client.get(f"http://{SERVICE}/")

        for _ in range(int(spec.get("warmup", 0))):
            await send()
        if float(spec.get("warmup_seconds", 0.0)) > 0:
            await run_open_loop(send, rate=rate, duration=float(spec["warmup_seconds"]))
        before = await asyncio.to_thread(upstream_totals, urls)
        result = await run_open_loop(send, rate=rate, duration=float(spec["duration"]))
        after = await asyncio.to_thread(upstream_totals, urls)
    out = _summary(result)
    out["upstream"] = {k: after[k] - before.get(k, 0) for k in after}
    return out


def mesh_open_loop(spec: Spec) -> Spec:
    """Open loop through ``AsyncMeshClient`` (config from the spec); upstream counts included."""
    return asyncio.run(_mesh_open_loop(spec))


# ----------------------------------------------------------------------------- Consul


def _consul(urls: Sequence[str]) -> tuple[Any, list[str]]:
    from meshlib.testing import FakeConsul

    consul = FakeConsul().start()
    ids = []
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        sid = f"{SERVICE}-{i}"
        consul.register_service(
            SERVICE, service_id=sid, address=parts.hostname or "127.0.0.1", port=parts.port or 80
        )
        ids.append(sid)
    return consul, ids


def _consul_config(consul: Any, wait: str) -> meshlib.MeshConfig:
    return meshlib.MeshConfig.from_env(
        {
            "CONSUL_HTTP_ADDR": str(consul.http_addr),
            "MESH_CONSUL_WAIT": wait,
            "MESH_DISCOVERY_TIMEOUT": "5s",
        }
    )


def _endpoint_listed(state: Any, address: str) -> bool:
    """Whether ``address`` (``host:port``) appears anywhere in ``client.mesh_state()``."""
    return address in json.dumps(state)


async def _consul_change(spec: Spec) -> Spec:
    urls = list(spec["urls"])
    rate = float(spec["rate"])
    consul, ids = _consul(urls)
    removed_url = urls[-1]
    removed_addr = removed_url.removeprefix("http://")
    try:
        cfg = _consul_config(consul, str(spec.get("wait", "5s")))
        async with meshlib.AsyncMeshClient(config=cfg, timeout=5.0) as client:
            removed_name = ""
            last_sent_to_removed = float("-inf")

            async def send() -> httpx.Response:
                nonlocal last_sent_to_removed
                t = time.perf_counter()
                response = await client.get(f"http://{SERVICE}/")
                if removed_name and response.headers.get("x-upstream") == removed_name:
                    last_sent_to_removed = max(last_sent_to_removed, t)
                return response

            for _ in range(30):
                await send()
            names = {u: n for n, u in zip(upstream_names(urls), urls, strict=True)}
            removed_name = names[removed_url]
            await run_open_loop(send, rate=rate, duration=float(spec["before"]))
            if not _endpoint_listed(client.mesh_state(), removed_addr):
                raise RuntimeError("the endpoint to remove was never in the mesh's view")
            traffic = asyncio.ensure_future(
                run_open_loop(send, rate=rate, duration=float(spec["after"]))
            )
            await asyncio.sleep(0.5)
            t0 = time.perf_counter()
            await asyncio.to_thread(consul.deregister, ids[-1])
            gone_at = float("nan")
            deadline = t0 + float(spec["after"]) - 0.6
            while time.perf_counter() < deadline:
                if not _endpoint_listed(client.mesh_state(), removed_addr):
                    gone_at = time.perf_counter()
                    break
                await asyncio.sleep(0.002)
            result = await traffic
    finally:
        consul.stop()
    out = _summary(result)
    out["deregister_to_view_ms"] = (gone_at - t0) * 1e3
    out["deregister_to_last_request_ms"] = max(0.0, (last_sent_to_removed - t0) * 1e3)
    return out


def upstream_names(urls: Sequence[str]) -> list[str]:
    """The ``name`` of each Python upstream (its ``X-Upstream`` header), in ``urls`` order."""
    names = []
    for url in urls:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5.0)
        try:
            conn.request("GET", "/control")
            names.append(str(json.loads(conn.getresponse().read())["behaviour"]["name"]))
        finally:
            conn.close()
    return names


def consul_change(spec: Spec) -> Spec:
    """Deregister one of three instances under traffic; how long until the mesh stops using it."""
    return asyncio.run(_consul_change(spec))


async def _consul_idle(spec: Spec) -> Spec:
    urls = list(spec["urls"])
    consul, _ = _consul(urls)
    idle = float(spec["idle"])
    try:
        consul.clear_requests()
        cfg = _consul_config(consul, str(spec["wait"]))
        async with meshlib.AsyncMeshClient(config=cfg, timeout=5.0) as client:
            t0 = time.perf_counter()
            ok = 0
            # Light traffic (2 req/s) so the service stays resolved; nothing changes in Consul.
            while time.perf_counter() - t0 < idle:
                if (await client.get(f"http://{SERVICE}/")).status_code == 200:
                    ok += 1
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - t0
            health = [r for r in consul.requests if r.path.startswith("/v1/health/service/")]
    finally:
        consul.stop()
    return {
        "health_requests": len(health),
        "elapsed_s": elapsed,
        "ok": ok,
        "paths": dict(Counter(r.path for r in consul.requests)),
    }


def consul_idle(spec: Spec) -> Spec:
    """``MESH_CONSUL_WAIT`` = ``wait``, no change for ``idle`` s: Consul health reads made."""
    return asyncio.run(_consul_idle(spec))


async def _consul_outage(spec: Spec) -> Spec:
    urls = list(spec["urls"])
    rate = float(spec["rate"])
    consul, _ = _consul(urls)
    try:
        cfg = _consul_config(consul, str(spec.get("wait", "2s")))
        async with meshlib.AsyncMeshClient(config=cfg, timeout=5.0) as client:

            async def send() -> httpx.Response:
                return await client.get(f"http://{SERVICE}/")

            for _ in range(30):
                await send()
            await run_open_loop(send, rate=rate, duration=1.0)
            outage = float(spec["outage"])
            traffic = asyncio.ensure_future(run_open_loop(send, rate=rate, duration=outage + 2.0))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(consul.down)
            consul.clear_requests()
            await asyncio.sleep(outage)
            await asyncio.to_thread(consul.up)
            result = await traffic
    finally:
        consul.stop()
    return _summary(result)


def consul_outage(spec: Spec) -> Spec:
    """Consul down for ``outage`` s in the middle of an open loop; what the callers saw."""
    return asyncio.run(_consul_outage(spec))
