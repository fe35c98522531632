"""``otel-overhead``: client CPU per request with and without an OpenTelemetry SDK installed.

Why: meshlib always calls the OpenTelemetry *API*; an application that installs the SDK pays for
spans and metric points, one that does not must pay (almost) nothing. Each variant is its own
worker process, ``AsyncMeshClient`` with the default config, c = 1, three nginx replicas:

* A - no SDK (the API's proxy providers only);
* B - ``meshlib.telemetry.configure(traces="none", metrics_exporter="none",
  span_exporter=NoopExporter())``: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` feeding
  an exporter whose ``export`` returns ``SUCCESS`` (every trace sampled); no ``MeterProvider``;
* C - an SDK ``MeterProvider`` with an ``InMemoryMetricReader`` only (set directly, no tracer).

B - A and C - A are medians of per-round paired differences. "API only" has no switch to turn
observability off, so it is measured directly: with no SDK the per-request cost is the two
checks ``Tracing().active()`` + ``MeshMetrics.enabled()``, timed in a tight loop.

The SDK floor rows time, in their own worker with the same SDK set-up and no meshlib, exactly
what one single-attempt call asks of the SDK: the INTERNAL and CLIENT spans with meshlib's
attributes, one inject, two status attributes and two ends (B); the attempt and call duration
records with their attribute sets (C). The "meshlib's own code" rows time meshlib's observation
hooks for the same call on a real transport, in the same kind of tight loop, minus the call
without them, with stub providers in place of the SDK (API-level spans with fresh ids, no-op
instruments), so the SDK's work is not in them. Both are tight loops because the end-to-end
difference is too noisy on a shared machine to resolve a few microseconds.
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

__all__ = ["NAME", "run"]

NAME = "otel-overhead"
_LABELS = {
    "none": "A: no SDK",
    "traces": "B: SDK traces (Batch + no-op exporter)",
    "metrics": "C: SDK metrics only (InMemoryMetricReader)",
}


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "OpenTelemetry overhead per request (AsyncMeshClient, c=1, 3 nginx replicas)",
        "Client CPU per request with no SDK, with the tracing SDK (batched, no-op exporter) and "
        "with the metrics SDK only; plus the no-SDK per-request check in a tight loop.",
    )
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        variants = [
            Variant(k, closed_c1_spec(urls, opts, kind="otel-closed", sdk=k)) for k in _LABELS
        ]
        variants.append(Variant("api", {"kind": "otel-api-check", "iterations": 200_000}))
        for sdk in ("traces", "metrics"):
            for kind in ("floor", "hooks"):
                spec = {"kind": f"otel-sdk-{kind}" if kind == "floor" else "otel-hooks"}
                spec.update(sdk=sdk, iterations=opts.scale(5000, 1000))
                variants.append(Variant(f"{kind}-{sdk}", spec))
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    rows = {}
    for key, label in _LABELS.items():
        res.notes.extend(check_clean(label, data[key]))
        rows[key] = res.add(Row(label, "CPU µs/request", column(data[key], "cpu_us_per_request")))
        r0 = data[key][0]
        res.notes.append(
            f"{label}: Tracing().active()={r0['tracing_active']}, "
            f"MeshMetrics.enabled()={r0['metrics_enabled']}"
        )
    res.ratio_to(rows["none"], rows["traces"], rows["metrics"])
    at_most(paired_difference(res, "B - A", rows["traces"], rows["none"]), 40.0, "µs")
    at_most(paired_difference(res, "C - A", rows["metrics"], rows["none"]), 10.0, "µs")
    for sdk, what in (("traces", "two spans + inject"), ("metrics", "two histogram records")):
        floor = res.add(
            Row(
                f"SDK floor ({sdk}): {what}, no meshlib",
                "CPU µs per call, tight loop",
                column(data[f"floor-{sdk}"], "us_per_call"),
            )
        )
        glue = res.add(
            Row(
                f"meshlib's own {sdk} code (stub provider, no SDK work)",
                "CPU µs per call, tight loop",
                column(data[f"hooks-{sdk}"], "us_per_call"),
            )
        )
        res.add(
            Row(
                f"floor + meshlib ({sdk}): expected added cost per call",
                "CPU µs per call",
                [g + f for g, f in zip(glue.rounds, floor.rounds, strict=True)],
            )
        )
    api = res.add(
        Row(
            "A: API only (no SDK)",
            "µs per Tracing().active() + MeshMetrics.enabled()",
            column(data["api"], "us_per_check"),
            "{:.2f}",
        )
    )
    at_most(api, 3.0, "µs")
    res.notes.append(
        "The API-only row is the per-request observability check with no SDK, timed alone (best "
        "of 5 x 200,000 calls per round); A's absolute CPU/request above includes it."
    )
    return res
