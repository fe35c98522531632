"""Worker-side measurement for the ``random-stalls`` and ``overload`` scenarios.

``tail_open_loop`` runs an open loop through ``AsyncMeshClient`` configured by the spec (a hedge
setting for the service, an adaptive concurrency limit, a total deadline), like
``resilience_worker.mesh_open_loop``, and reports what these two scenarios judge: latency
percentiles from each request's due time, successful calls that finished within the deadline
(goodput), calls refused at once by the adaptive limit, and each upstream's request count read
from its ``/control`` endpoint before and after the run, so extra load from hedges is counted
where it lands. Before the warm-up it sets every upstream's behaviour again through ``/control``,
which starts a bounded-capacity upstream with an empty queue: one variant's backlog never
spills into the next variant's round.

Bounded by rate x duration; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

import meshlib
from benchmarks.model import nearest_rank
from benchmarks.resilience_worker import upstream_totals
from meshlib.demo.loadgen import run_open_loop

__all__ = ["tail_open_loop"]

Spec = dict[str, Any]
SERVICE = "svc"


def _reset(urls: Sequence[str]) -> None:
    """Set each upstream's behaviour again, unchanged: a new behaviour starts with an empty
    queue (an empty change would be ignored, so the current capacity is sent back)."""
    for url in urls:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5.0)
        try:
            conn.request("GET", "/control")
            current = json.loads(conn.getresponse().read())["behaviour"]
            body = json.dumps({"capacity": current["capacity"]}).encode()
            conn.request(
                "POST", "/control", body=body, headers={"Content-Type": "application/json"}
            )
            conn.getresponse().read()
        finally:
            conn.close()


def _config(spec: Spec) -> meshlib.MeshConfig:
    env = {
        "MESH_DISCOVERY": "static",
        "MESH_STATIC_ENDPOINTS": SERVICE
        + "="
        + ",".join(u.removeprefix("http://") for u in spec["urls"]),
    }
    if spec.get("hedge"):
        env["MESH_HEDGE"] = f"{SERVICE}={spec['hedge']}"
    if spec.get("adaptive"):
        env["MESH_ADAPTIVE_CONCURRENCY"] = f"{SERVICE}={spec['adaptive']}"
    if spec.get("deadline"):
        env["MESH_TIMEOUT"] = f"{float(spec['deadline'])}s"
    return meshlib.MeshConfig.from_env(env)


async def _run(spec: Spec) -> Spec:
    urls = list(spec["urls"])
    rate, duration = float(spec["rate"]), float(spec["duration"])
    deadline = float(spec.get("deadline") or 0.0)
    await asyncio.to_thread(_reset, urls)
    async with meshlib.AsyncMeshClient(config=_config(spec), timeout=10.0) as client:
        refused = 0
        ok: list[float] = []
        loop = asyncio.get_running_loop()

        async def send() -> httpx.Response:
            nonlocal refused
            started = loop.time()
            try:
                response = await client.get(f"http://{SERVICE}/")
            except meshlib.RateLimited:
                refused += 1
                raise
            if response.status_code == 200:
                ok.append(loop.time() - started)
            return response

        for _ in range(int(spec.get("warmup", 0))):
            with contextlib.suppress(httpx.HTTPError):  # a noisy moment must not end the run
                await send()
        warm_rate = float(spec.get("warmup_rate") or rate)
        if float(spec.get("warmup_seconds", 0.0)) > 0:
            await run_open_loop(send, rate=warm_rate, duration=float(spec["warmup_seconds"]))
        refused = 0
        ok.clear()
        before = await asyncio.to_thread(upstream_totals, urls)
        result = await run_open_loop(send, rate=rate, duration=duration)
        after = await asyncio.to_thread(upstream_totals, urls)
        state = client.mesh_state()["services"].get(SERVICE, {})
    ordered = sorted(result.latencies)
    in_time = sum(1 for t in ok if not deadline or t <= deadline)
    hedge = state.get("hedge") or {}
    adaptive = (state.get("limits") or {}).get("adaptive") or {}
    return {
        "sent": result.sent,
        "p50_ms": nearest_rank(ordered, 50) * 1e3,
        "p99_ms": nearest_rank(ordered, 99) * 1e3,
        "p999_ms": nearest_rank(ordered, 99.9) * 1e3,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "errors": dict(result.errors),
        "dropped": result.dropped,
        "duration_s": result.duration,
        "ok_in_deadline": in_time,
        "goodput": in_time / duration,
        "refused": refused,
        "upstream": {k: after[k] - before.get(k, 0) for k in after},
        "hedges_sent": hedge.get("sent", 0),
        "hedges_refused": hedge.get("budget_refused", 0),
        "hedge_quantile_ms": hedge.get("quantile_ms"),
        "limit": adaptive.get("limit"),
    }


def tail_open_loop(spec: Spec) -> Spec:
    """One open-loop run for ``random-stalls`` or ``overload`` (see the module docstring)."""
    return asyncio.run(_run(spec))
