"""``inbound-limit``: a 100 req/s inbound bucket offered 1,000 req/s, ASGI and WSGI.

Why: an inbound limit is only useful if it holds the application at its rate and refuses the
excess so cheaply that refusing costs the server next to nothing and the caller learns at once.
A small app answering ``200 ok`` runs behind ``MeshASGIMiddleware`` under uvicorn (and behind
``MeshWSGIMiddleware`` under uvicorn's WSGI interface, a thread pool), in its own process; an
open-loop client (a minimal keep-alive asyncio client, no retries) offers 1,000 req/s. Each
worker starts a fresh server (stopped by its pid), warms up at the full rate so the bucket's
burst is spent, then measures:

* the application's rate: 200s per second of the measured window (target 100 ± 5 req/s);
* the latency of the 429s, from send to response, p50 and p99 (target ≤ 1 ms);
* the latency of the admitted 200s, for context; the same app with no limit is the baseline,
  and its 200 latency is the floor of this client, server and machine;
* the middleware's own CPU per refusal, in process, with no server and no client around it.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import at_most, column

__all__ = ["LIMIT", "NAME", "OFFERED", "run"]

NAME = "inbound-limit"
LIMIT = 100.0
OFFERED = 1000.0
TOLERANCE = 5.0
REFUSAL_MS = 1.0


def _spec(opts: Options, server: str, limit: float | None) -> dict[str, Any]:
    return {
        "kind": "inbound-limit",
        "server": server,
        "limit": limit,
        "rate": OFFERED,
        "duration": opts.seconds(5.0, 2.0),
        "warmup_seconds": opts.seconds(1.5, 1.0),
    }


def _within(row: Row, centre: float, tolerance: float, unit: str) -> Row:
    row.target = f"{centre:g} ± {tolerance:g} {unit}"
    row.passed = row.median == row.median and abs(row.median - centre) <= tolerance
    return row


def _notes(res: ScenarioResult, label: str, results: list[Result]) -> None:
    for i, r in enumerate(results, 1):
        if r.get("errors"):
            res.notes.append(f"{label}, round {i}: errors {r['errors']}, statuses {r['statuses']}")


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        f"Inbound limit: a {LIMIT:g} req/s bucket offered {OFFERED:g} req/s",
        "Open loop at 1,000 req/s against a `200 ok` app behind meshlib's inbound middleware "
        "(uvicorn; WSGI through uvicorn's WSGI interface), fresh server per round; latency from "
        "send to response, against the same server with no limit (the round trip's floor); "
        "refusal CPU measured in process.",
    )
    variants = [
        Variant(
            f"{server}-{kind}", _spec(opts, server, LIMIT if kind == "limit" else None), (), 120
        )
        for server in ("asgi", "wsgi")
        for kind in ("open", "limit")
    ]
    variants.append(
        Variant("cost", {"kind": "inbound-refusal-cost", "calls": opts.scale(50_000, 10_000)})
    )
    data = interleave(NAME, variants, opts.rounds, opts.verbose)
    fmt = "{:.2f}"
    for server in ("asgi", "wsgi"):
        open_label, label = (
            f"{server.upper()}, no limit",
            f"{server.upper()}, {LIMIT:g} req/s bucket",
        )
        opened, limited = data[f"{server}-open"], data[f"{server}-limit"]
        _notes(res, open_label, opened)
        _notes(res, label, limited)
        base = res.add(Row(open_label, "app req/s", column(opened, "app_per_s")))
        rate = res.add(Row(label, "app req/s", column(limited, "app_per_s")))
        res.ratio_to(base, rate)
        _within(rate, LIMIT, TOLERANCE, "req/s")
        for q in ("p50", "p99"):
            floor = res.add(
                Row(open_label, f"200 latency {q}, ms", column(opened, f"admitted_{q}_ms"), fmt)
            )
            row = res.add(
                Row(label, f"429 latency {q}, ms", column(limited, f"refused_{q}_ms"), fmt)
            )
            res.ratio_to(floor, row)
            at_most(row, REFUSAL_MS, "ms")
        res.add(Row(label, "200 latency p50, ms", column(limited, "admitted_p50_ms"), fmt))
    loads = [f"{r['loadavg_1m']:.1f}" for r in data["asgi-limit"]]
    res.notes.append(
        f"Load average (1 min) when each round's limited ASGI worker ended: {', '.join(loads)} "
        f"on {os.cpu_count()} CPUs; the latency rows move with it, the app's rate does not."
    )
    for key, name in (("asgi_us", "MeshASGIMiddleware"), ("wsgi_us", "MeshWSGIMiddleware")):
        res.add(Row(name, "CPU µs per refusal, in process", column(data["cost"], key), "{:.1f}"))
    return res
