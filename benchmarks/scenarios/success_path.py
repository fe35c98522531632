"""``success-path``: what the retry / budget / breaker machinery costs when nothing fails.

Why: resilience must be (nearly) free on the success path. ``AsyncMeshClient`` with the default
``MeshConfig`` is compared with the same client with that machinery minimized
(``retry=RetryPolicy(max_attempts=1)``, ``accrual=AccrualPolicy(enabled=False)``), client CPU per
request at c = 1 against the ``cpu`` scenario's three nginx replicas. The two variants run
back to back in each round and the report gives the median of the per-round differences.
"""

from __future__ import annotations

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

NAME = "success-path"
TARGET_US = 10.0


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Success-path cost of retries, budget and failure accrual (c=1, 3 nginx replicas)",
        "Client CPU per request of `AsyncMeshClient`, default config vs retries/budget/breaker "
        "minimized (`RetryPolicy(max_attempts=1)`, `AccrualPolicy(enabled=False)`).",
    )
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        variants = [
            Variant("default", closed_c1_spec(urls, opts, mesh=None)),
            Variant(
                "minimal", closed_c1_spec(urls, opts, mesh={"retries": False, "accrual": False})
            ),
        ]
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    labels = {
        "default": "AsyncMeshClient, default MeshConfig",
        "minimal": "AsyncMeshClient, max_attempts=1, accrual off",
    }
    rows = {}
    for key, label in labels.items():
        res.notes.extend(check_clean(label, data[key]))
        rows[key] = res.add(Row(label, "CPU µs/request", column(data[key], "cpu_us_per_request")))
    res.ratio_to(rows["minimal"], rows["default"])
    diff = paired_difference(res, "default - minimal", rows["default"], rows["minimal"])
    at_most(diff, TARGET_US, "µs")
    return res
