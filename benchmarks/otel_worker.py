"""Worker-side measurements for the OpenTelemetry scenario (``scenarios/otel.py``).

* ``otel_closed`` - the ``closed-async`` CPU loop after installing an OpenTelemetry SDK variant;
* ``otel_api_check`` - the per-request "is anybody listening?" checks in a tight loop;
* ``otel_sdk_floor`` - the SDK's own cost for what one single-attempt call asks of it (two spans
  and an inject, or two histogram records), through the public API with no meshlib at all;
* ``otel_hooks`` - meshlib's observation hooks for one single-attempt call, with the same SDK,
  in the same kind of tight loop, against the same call with the hooks skipped.

Comparing ``otel_hooks`` with ``otel_sdk_floor`` gives meshlib's own glue; the end-to-end
difference (``otel_closed`` with and without an SDK) is too noisy on a shared machine to tell a
few microseconds apart. No network traffic except ``otel_closed``'s, to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

import meshlib
from benchmarks.loops import closed_async
from meshlib.otel.metrics import MeshMetrics
from meshlib.otel.tracing import Tracing

__all__ = ["otel_api_check", "otel_closed", "otel_hooks", "otel_sdk_floor"]

Spec = dict[str, Any]
SERVICE = "svc"


def _install_sdk(variant: str) -> None:
    if variant == "none":
        return
    if variant == "traces":
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class NoopExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        from meshlib.telemetry import configure

        # A TracerProvider with a BatchSpanProcessor; "none" metrics install no MeterProvider.
        configure(traces="none", metrics_exporter="none", span_exporter=NoopExporter())
        return
    if variant == "metrics":
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        return
    raise ValueError(f"unknown SDK variant {variant!r}")


def otel_closed(spec: Spec) -> Spec:
    """``closed-async`` after installing the SDK variant ``spec["sdk"]`` (none/traces/metrics)."""
    _install_sdk(str(spec["sdk"]))
    out = closed_async(spec)
    out["tracing_active"] = Tracing().active()
    out["metrics_enabled"] = MeshMetrics.enabled()
    return out


def otel_api_check(spec: Spec) -> Spec:
    """µs per ``Tracing().active()`` + ``MeshMetrics.enabled()`` pair, no SDK installed."""
    tracing = Tracing()
    enabled = MeshMetrics.enabled
    n = int(spec["iterations"])
    for _ in range(min(n, 10_000)):
        tracing.active()
        enabled()
    best = math.inf
    for _ in range(int(spec.get("repeats", 5))):
        t0 = time.perf_counter()
        for _ in range(n):
            tracing.active()
            enabled()
        best = min(best, time.perf_counter() - t0)
    return {"us_per_check": best / n * 1e6, "active": tracing.active(), "enabled": enabled()}


def _trace_floor() -> Any:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("floor")
    attempt_attrs = {
        "http.request.method": "GET",
        "server.address": SERVICE,
        "server.port": 80,
        "url.full": f"http://{SERVICE}/",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": 8080,
    }

    def one_call() -> None:
        call = tracer.start_span(
            f"mesh {SERVICE}",
            kind=SpanKind.INTERNAL,
            attributes={"mesh.service": SERVICE, "http.request.method": "GET"},
        )
        parent = trace.set_span_in_context(call)
        span = tracer.start_span(
            "GET", context=parent, kind=SpanKind.CLIENT, attributes=dict(attempt_attrs)
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        span.set_attribute("http.response.status_code", 200)
        span.end()
        call.set_attribute("http.response.status_code", 200)
        call.end()

    return one_call


def _metrics_floor() -> Any:
    from opentelemetry import metrics

    from meshlib.otel.metrics import DURATION_BUCKETS

    meter = metrics.get_meter("floor")
    attempt = meter.create_histogram(
        "floor.attempt", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
    )
    call = meter.create_histogram(
        "floor.call", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
    )
    attempt_attrs = {
        "http.request.method": "GET",
        "server.address": SERVICE,
        "server.port": 80,
        "http.response.status_code": 200,
    }
    call_attrs = {"http.request.method": "GET", "server.address": SERVICE}

    def one_call() -> None:
        attempt.record(0.001, attempt_attrs)
        call.record(0.001, call_attrs)

    return one_call


def otel_sdk_floor(spec: Spec) -> Spec:
    """CPU µs the SDK itself spends on one single-attempt call's telemetry (median of repeats).

    Why: the per-request targets are paid mostly inside the SDK; this separates that floor from
    meshlib's own glue, in the same kind of process and the same run.
    """
    variant = str(spec["sdk"])
    _install_sdk(variant)
    one_call = _trace_floor() if variant == "traces" else _metrics_floor()
    repeats = int(spec.get("repeats", 5))
    return {"us_per_call": _median_us(one_call, int(spec["iterations"]), repeats)}


def _median_us(one_call: Callable[[], None], n: int, repeats: int) -> float:
    for _ in range(min(n, 2_000)):
        one_call()
    samples = []
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(n):
            one_call()
        samples.append((time.process_time() - c0) / n * 1e6)
    samples.sort()
    return samples[len(samples) // 2]


def _install_stub(variant: str) -> None:
    """Providers that make meshlib's hooks run in full while the telemetry work costs next to
    nothing: API-level spans with fresh ids (no recording, no processor), no-op instruments."""
    import random

    if variant == "traces":
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        rng = random.Random(1)

        class StubTracer(trace.Tracer):
            def start_span(self, name: str, context: Any = None, *a: Any, **k: Any) -> Any:
                parent = trace.get_current_span(context).get_span_context()
                trace_id = parent.trace_id if parent.is_valid else rng.getrandbits(128)
                ctx = SpanContext(trace_id, rng.getrandbits(64), False, TraceFlags(1))
                return NonRecordingSpan(ctx)

            def start_as_current_span(self, *a: Any, **k: Any) -> Any:
                raise NotImplementedError

        class StubTracerProvider(trace.TracerProvider):
            def get_tracer(self, *a: Any, **k: Any) -> trace.Tracer:
                return StubTracer()

        trace.set_tracer_provider(StubTracerProvider())
        return
    from opentelemetry import metrics

    class StubMeterProvider(metrics.NoOpMeterProvider):
        """Counts as installed for meshlib (not the API's no-op type); its instruments drop
        every measurement."""

    metrics.set_meter_provider(StubMeterProvider())


def otel_hooks(spec: Spec) -> Spec:
    """CPU µs meshlib's own observation code adds to one single-attempt call.

    The call is the pipeline's own ``Call`` and ``Attempt`` on a real transport (no I/O: the
    response is a ready ``httpx.Response``); the same loop with the hooks skipped is subtracted,
    interleaved repeat by repeat. Stub providers (``_install_stub``) stand in for the SDK, so
    what remains is meshlib's glue plus the stubs' few microseconds; added to the SDK floor it
    gives the cost per call without the noise of the end-to-end difference.
    """
    variant = str(spec["sdk"])
    _install_stub(variant)
    transport = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery({SERVICE: ["127.0.0.1:8080"]}),
        config=meshlib.MeshConfig(),
    )
    url = httpx.URL(f"http://{SERVICE}/")
    router = transport.router
    service = asyncio.run(router.resolve(router.target(SERVICE)))  # type: ignore[arg-type]
    response = httpx.Response(200)
    observer = transport.observer()  # built now: the stub provider imported OpenTelemetry
    assert observer is not None

    def call(hooks: bool) -> None:
        request = httpx.Request("GET", url)
        c = transport.call(request, service)
        if hooks:
            obs = observer.begin(c, url)
        else:
            # What every request pays with no SDK (row A): the two "is anybody listening?"
            # checks, so the difference is only what an installed provider adds.
            observer.tracing.active()
            observer.metrics.enabled()
            obs = None
        attempt = c.start_attempt()
        if obs is not None:
            obs.attempt(attempt, request)
            obs.response(attempt, response)
        attempt.finish()
        if obs is not None:
            obs.finish(response, None)

    n = int(spec["iterations"])
    diffs = []
    for _ in range(int(spec.get("repeats", 5))):
        on = _median_us(lambda: call(True), n, 1)
        off = _median_us(lambda: call(False), n, 1)
        diffs.append(on - off)
    diffs.sort()
    return {"us_per_call": diffs[len(diffs) // 2]}
