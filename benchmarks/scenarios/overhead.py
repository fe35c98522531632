"""``overhead``: what the mesh layer itself costs on top of its own HTTP engine, at c=1.

Why: ``cpu`` compares meshlib with stock httpx, which mostly measures the engine and httpx's
client layer. This scenario holds both fixed. The baseline is a stock ``httpx.AsyncClient``
over meshlib's bare ``AsyncEngine`` with client-side round robin; the variant under test is
the *same* stock ``httpx.AsyncClient`` over ``meshlib.AsyncMeshTransport`` (which wraps the
same engine). Their difference is the mesh layer alone: addressing, the discovery lookup, the
P2C pick, the call / attempt bookkeeping (retry policy, budget, failure accrual, stats), load
tracking and the response-stream wrapper. That difference is judged against the target.

Two more rows are context: the transport with retries off (``RetryPolicy(max_attempts=1)``),
to show what the retry machinery costs when nothing fails, and ``AsyncMeshClient`` itself,
whose client layer has fast paths of its own (URL reuse, no cookie parsing without
``Set-Cookie``), so *its* difference to the bare engine mixes the mesh's cost with those
savings and can even be negative.

One more row is the precise measure of the same thing: ``mesh-layer-loop`` (in
``benchmarks.overhead_worker``) times a stock ``httpx.AsyncClient`` over ``AsyncMeshTransport``
whose inner transport answers at once, against the same client over that no-op transport, batch
against batch in one process. No engine, socket or server is in it, so it resolves the mesh
layer's code to about a microsecond; it is judged against the same target.

The differences are small next to the totals, so they are taken per round (the variants run
back to back in each round) and the median of those paired differences is reported, which
cancels most of the drift between rounds. For the same reason this scenario runs three times
as many rounds as ``--rounds`` asks for, each shorter: a burst of load from another process
then spoils one pair out of many instead of one out of five.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Variant, interleave
from benchmarks.scenarios.common import (
    at_most,
    check_clean,
    closed_c1_spec,
    column,
    paired_difference,
)
from benchmarks.servers import nginx_replicas

__all__ = ["NAME", "TARGET_US", "run"]

NAME = "overhead"
TARGET_US = 30.0
ROUND_FACTOR = 3
_LABELS = {
    "engine": "httpx.AsyncClient(transport=AsyncEngine()) round robin",
    "transport": "httpx.AsyncClient(transport=AsyncMeshTransport())",
    "transport-noretry": "httpx.AsyncClient(transport=AsyncMeshTransport()), retries off",
    "client": "meshlib AsyncMeshClient",
}


def _spec(client: str, urls: list[str], opts: Options, retries: bool = True) -> dict[str, Any]:
    mesh = None if retries else {"retries": False}
    # 1000 requests in a quick run (not 600): the differences here are a few µs.
    spec = closed_c1_spec(urls, opts, client=client, mesh=mesh)
    spec["requests"] = opts.scale(3000, 1000)
    return spec


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "The mesh layer's own CPU cost (c=1)",
        "Same stock httpx client over AsyncMeshTransport minus over the bare AsyncEngine; "
        f"paired per round ({ROUND_FACTOR} x --rounds rounds).",
    )
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        variants = [
            Variant("engine", _spec("engine", urls, opts)),
            Variant("transport", _spec("mesh-transport", urls, opts)),
            Variant("transport-noretry", _spec("mesh-transport", urls, opts, retries=False)),
            Variant("client", _spec("mesh", urls, opts)),
            Variant(
                "loop", {"kind": "mesh-layer-loop", "batch": opts.scale(2000, 500), "pairs": 9}
            ),
        ]
        data = interleave(NAME, variants, ROUND_FACTOR * opts.rounds, opts.verbose)
    rows: dict[str, Row] = {}
    for key, label in _LABELS.items():
        res.notes.extend(check_clean(label, data[key]))
        rows[key] = res.add(Row(label, "CPU µs/request", column(data[key], "cpu_us_per_request")))
    res.ratio_to(rows["engine"], rows["transport"], rows["transport-noretry"], rows["client"])
    at_most(
        paired_difference(
            res, "mesh layer (transport - engine)", rows["transport"], rows["engine"]
        ),
        TARGET_US,
        "µs",
    )
    paired_difference(
        res,
        "mesh layer, retries off (transport - engine)",
        rows["transport-noretry"],
        rows["engine"],
    )
    paired_difference(res, "AsyncMeshClient - engine (context)", rows["client"], rows["engine"])
    at_most(
        res.add(
            Row(
                "mesh layer over a no-op inner transport (transport - bare, tight loop)",
                "CPU µs/request, paired batches",
                column(data["loop"], "us_per_request"),
            )
        ),
        TARGET_US,
        "µs",
    )
    res.notes.append(
        "The tight-loop row times the same stock httpx.AsyncClient over AsyncMeshTransport "
        "and over the bare no-op transport it wraps, in one process, batch against batch "
        "(median of 9 pairs per round): the mesh layer's own code with no engine, socket or "
        "server in the measurement, so it resolves what the end-to-end paired difference "
        "cannot on a shared machine."
    )
    res.notes.append(
        "Mesh rows use MeshConfig's defaults (retries on, max_attempts 3; no request fails "
        "here, so none is retried) unless they say retries off (RetryPolicy(max_attempts=1))."
    )
    return res
