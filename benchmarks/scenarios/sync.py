"""``sync``: client CPU per request of the sync client, one thread.

Why: WSGI services call out synchronously, and ``MeshClient`` is their entry point. Baseline is
stock ``httpx.Client()`` with client-side round robin over the same three nginx replicas; httpx
over meshlib's bare ``SyncEngine`` is shown to separate the engine from the mesh layer.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Variant, interleave
from benchmarks.scenarios.common import check_clean, column, ratio_target
from benchmarks.servers import nginx_replicas

__all__ = ["NAME", "TARGET", "run"]

NAME = "sync"
TARGET = 0.5
_LABELS = {
    "httpx": "httpx.Client() round robin",
    "mesh": "meshlib MeshClient",
    "engine": "httpx + SyncEngine round robin",
}


def _spec(client: str, urls: list[str], opts: Options) -> dict[str, Any]:
    return {
        "kind": "closed-sync",
        "client": client,
        "urls": urls,
        "concurrency": 1,
        "requests": opts.scale(5000, 800),
        "warmup": opts.scale(300, 100),
        "max_seconds": opts.seconds(20.0, 5.0),
        "balancer": "p2c-peak-ewma",
    }


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Sync client CPU per request (one thread, 3 nginx replicas)",
        "User+system CPU of the client process per request, closed loop.",
    )
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        variants = [Variant(c, _spec(c, urls, opts)) for c in _LABELS]
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    rows = {}
    for c, label in _LABELS.items():
        res.notes.extend(check_clean(label, data[c]))
        rows[c] = res.add(Row(label, "CPU µs/request", column(data[c], "cpu_us_per_request")))
    res.ratio_to(rows["httpx"], rows["mesh"], rows["engine"])
    ratio_target(rows["mesh"], TARGET)
    return res
