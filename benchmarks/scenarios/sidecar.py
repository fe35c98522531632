"""``sidecar``: latency of meshlib going direct vs stock httpx through a local HAProxy.

Why: the argument for an in-process mesh is that it beats the sidecar pattern (SmartStack:
a local HAProxy that balances for the application). Here the sidecar is HAProxy with
``balance roundrobin`` over the same three nginx replicas (``mode http``, keep-alive,
``nbthread 1``). Three variants, closed loop at concurrency 1:

* stock ``httpx.AsyncClient()`` -> HAProxy -> nginx (the baseline: the sidecar pattern);
* ``httpx + AsyncEngine`` -> HAProxy -> nginx, so the hop and the engine are seen apart;
* ``AsyncMeshClient`` -> nginx directly.

HAProxy's own CPU per request is read from ``/proc/<pid>/stat`` around each worker run and
divided by every request that worker sent through it (warm-up included, as HAProxy served
those too), and added to the client's CPU for a whole-path figure.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import check_clean, column, ratio_target
from benchmarks.servers import haproxy, nginx_replicas

__all__ = ["NAME", "TARGET", "run"]

NAME = "sidecar"
TARGET = 0.5
_LABELS = {
    "httpx-haproxy": "httpx.AsyncClient() → HAProxy",
    "engine-haproxy": "httpx + AsyncEngine → HAProxy",
    "mesh": "meshlib AsyncMeshClient direct",
}


def _spec(client: str, urls: list[str], opts: Options) -> dict[str, Any]:
    return {
        "kind": "closed-async",
        "client": client,
        "urls": urls,
        "concurrency": 1,
        "requests": opts.scale(5000, 800),
        "warmup": opts.scale(300, 100),
        "max_seconds": opts.seconds(20.0, 5.0),
        "latency": True,
        "balancer": "p2c-peak-ewma",
    }


def _proxy_us(r: Result) -> float:
    return float(r["watched_cpu_s"][0]) / int(r["total_requests"]) * 1e6


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Latency vs a local HAProxy sidecar (c=1, closed loop)",
        "Per-request wall time of `await client.get`, p50 and p99 of each round.",
    )
    with nginx_replicas(3) as replicas, haproxy(replicas, "roundrobin") as proxy:
        urls = [s.url for s in replicas]
        variants = [
            Variant("httpx-haproxy", _spec("httpx", [proxy.url], opts), watch=[proxy.pid]),
            Variant("engine-haproxy", _spec("engine", [proxy.url], opts), watch=[proxy.pid]),
            Variant("mesh", _spec("mesh", urls, opts)),
        ]
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    for name in _LABELS:
        res.notes.extend(check_clean(_LABELS[name], data[name]))
    for metric, key in (("p50 latency ms", "p50_ms"), ("p99 latency ms", "p99_ms")):
        rows = {
            n: res.add(Row(label, metric, column(data[n], key), fmt="{:.3f}"))
            for n, label in _LABELS.items()
        }
        res.ratio_to(rows["httpx-haproxy"], rows["engine-haproxy"], rows["mesh"])
        ratio_target(rows["mesh"], TARGET)
    for n in ("httpx-haproxy", "engine-haproxy"):
        res.add(Row(_LABELS[n], "HAProxy CPU µs/request", column(data[n], _proxy_us)))
    whole = {
        n: res.add(
            Row(
                _LABELS[n],
                "client + sidecar CPU µs/request",
                column(
                    data[n],
                    lambda r: r["cpu_us_per_request"] + (_proxy_us(r) if r["watched_cpu_s"] else 0),
                ),
            )
        )
        for n in _LABELS
    }
    res.ratio_to(whole["httpx-haproxy"], whole["engine-haproxy"], whole["mesh"])
    return res
