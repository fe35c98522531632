"""``traffic``: what a discovery chain (router + splitter + resolver) adds per request.

Why: traffic management runs on every request to a service with a chain (route matching, a
split draw, the subset's endpoint set), so its cost must stay small next to the mesh layer's.
The variant calls a service whose chain has a router with three routes (path prefix, header,
query) and the default, a 90/10 splitter and a resolver with two subsets by ``Service.Meta``;
the baseline calls a plain service with the same endpoints, through the same transport's
``handle_async_request`` over an inner transport that answers at once
(``benchmarks.traffic_worker``), in short alternating batches in one process. The median of
the paired differences is judged against the issue's target, 5 µs.
"""

from __future__ import annotations

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Variant, interleave
from benchmarks.scenarios.common import at_most, column

__all__ = ["NAME", "TARGET_US", "run"]

NAME = "traffic"
TARGET_US = 5.0


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Traffic management's CPU cost per request",
        "Router + splitter + resolver chain minus a plain service, same transport, no-op "
        "inner transport; paired batches in one process.",
    )
    spec = {"kind": "traffic-loop", "batch": opts.scale(500, 200), "pairs": opts.scale(41, 21)}
    data = interleave(NAME, [Variant("loop", spec)], opts.rounds, opts.verbose)["loop"]
    res.add(Row("plain service (baseline)", "CPU µs/request", column(data, "plain_us")))
    res.add(Row("service with a chain", "CPU µs/request", column(data, "chain_us")))
    at_most(
        res.add(
            Row(
                "added by the chain (chain - plain, paired batches)",
                "CPU µs/request",
                column(data, "us_per_request"),
            )
        ),
        TARGET_US,
        "µs",
    )
    res.add(
        Row(
            "added by the chain (fastest chain batch - fastest plain batch; context)",
            "CPU µs/request",
            column(data, "min_diff_us"),
        )
    )
    res.notes.append(
        "On a shared machine a batch's CPU time only grows with contention, so the fastest "
        "batches show the code's own cost; the judged row is the median of paired batches."
    )
    res.notes.append(
        "Both services have the same three endpoints and go through the same "
        "AsyncMeshTransport in one process; the chain's routes do not match the request, "
        "so each request tries all three before the default route and then draws the split "
        "(the costliest common path)."
    )
    return res
