"""``cpu``: client CPU per request, meshlib vs stock httpx, at concurrency 1 and 32.

Why: the mesh runs inside every service, so its price is the CPU it adds to each outbound
request. The baseline is what a service would do without meshlib: stock ``httpx.AsyncClient()``
spreading requests over the same three nginx replicas by client-side round robin. Two more
variants show where the difference comes from: httpx over meshlib's bare engine (no mesh), and
httpx over ``httpx-aiohttp``'s transport (the best off-the-shelf option) when installed.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import aiohttp_available
from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Variant, interleave
from benchmarks.scenarios.common import check_clean, column, ratio_target
from benchmarks.servers import nginx_replicas

__all__ = ["NAME", "TARGETS", "run"]

NAME = "cpu"
TARGETS = {1: 0.35, 32: 0.10}
_LABELS = {
    "httpx": "httpx.AsyncClient() round robin",
    "mesh": "meshlib AsyncMeshClient",
    "engine": "httpx + AsyncEngine round robin",
    "aiohttp": "httpx + AiohttpTransport round robin",
}


def _spec(client: str, urls: list[str], conc: int, opts: Options) -> dict[str, Any]:
    return {
        "kind": "closed-async",
        "client": client,
        "urls": urls,
        "concurrency": conc,
        "requests": opts.scale(3000, 600),
        "warmup": max(300, 20 * conc) if not opts.quick else 100,
        "max_seconds": opts.seconds(20.0, 5.0),
        "balancer": "p2c-peak-ewma",
    }


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Client CPU per request (async, 3 nginx replicas)",
        "User+system CPU of the client process per request, closed loop, c tasks each looping.",
    )
    clients = ["httpx", "mesh", "engine"] + (["aiohttp"] if aiohttp_available() else [])
    if "aiohttp" not in clients:
        res.notes.append("httpx-aiohttp is not installed: its reference row is skipped.")
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        variants = [
            Variant(f"{c}@{conc}", _spec(c, urls, conc, opts)) for conc in (1, 32) for c in clients
        ]
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    for conc in (1, 32):
        rows: dict[str, Row] = {}
        for c in clients:
            results = data[f"{c}@{conc}"]
            res.notes.extend(check_clean(f"{_LABELS[c]} c={conc}", results))
            rows[c] = res.add(
                Row(_LABELS[c], f"CPU µs/request, c={conc}", column(results, "cpu_us_per_request"))
            )
        others = [rows[c] for c in clients if c != "httpx"]
        res.ratio_to(rows["httpx"], *others)
        ratio_target(rows["mesh"], TARGETS[conc])
    return res
