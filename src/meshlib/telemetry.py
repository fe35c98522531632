"""``meshlib.telemetry.configure()``: an opt-in OpenTelemetry SDK setup for applications that
have none of their own.

meshlib itself only ever uses the global OpenTelemetry API and never installs a provider; that
is the application's decision. Applications that run under ``opentelemetry-instrument`` or set
up the SDK themselves need nothing from here. For the rest, ``configure()`` installs a
``TracerProvider`` and a ``MeterProvider`` with the exporter named by ``OTEL_TRACES_EXPORTER`` /
``OTEL_METRICS_EXPORTER`` (``console``, ``otlp`` or ``none``; read through ``MeshConfig``),
and a resource built by the SDK from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
It needs ``pip install 'meshlib[sdk]'`` (and ``opentelemetry-exporter-otlp`` for ``otlp``);
without them it raises a ``ConfigError`` that says what to install. A provider that is already
installed is left alone.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

from meshlib.config import MeshConfig
from meshlib.errors import ConfigError

__all__ = ["Telemetry", "configure", "format_trace_tree"]

log = logging.getLogger("meshlib.telemetry")


@dataclass
class Telemetry:
    """What ``configure`` installed; ``shutdown()`` flushes and stops it."""

    tracer_provider: Any | None
    meter_provider: Any | None

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _sdk(module: str, var: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{var}={what!r} needs the OpenTelemetry SDK: pip install 'meshlib[sdk]'"
            + (" opentelemetry-exporter-otlp" if what == "otlp" else "")
        ) from None


def _span_exporter(kind: str) -> Any:
    if kind == "console":
        return _sdk(
            "opentelemetry.sdk.trace.export", "OTEL_TRACES_EXPORTER", kind
        ).ConsoleSpanExporter()
    mod = _sdk(
        "opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTEL_TRACES_EXPORTER", kind
    )
    return mod.OTLPSpanExporter()


def _metric_exporter(kind: str) -> Any:
    if kind == "console":
        mod = _sdk("opentelemetry.sdk.metrics.export", "OTEL_METRICS_EXPORTER", kind)
        return mod.ConsoleMetricExporter()
    mod = _sdk(
        "opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTEL_METRICS_EXPORTER", kind
    )
    return mod.OTLPMetricExporter()


def configure(
    *,
    traces: str | None = None,
    metrics_exporter: str | None = None,
    span_exporter: Any | None = None,
    metric_reader: Any | None = None,
    config: MeshConfig | None = None,
) -> Telemetry:
    """Install the SDK with the configured exporters (arguments override ``OTEL_*``).

    Traces: a ``TracerProvider`` is installed even for ``none`` (new traces then get real ids
    that propagate downstream). Metrics: ``none`` without a ``metric_reader`` installs no
    ``MeterProvider``, since a provider with no reader costs every call and reports nothing.

    ``span_exporter`` / ``metric_reader`` take ready-made SDK objects instead (an in-memory
    exporter in a test, for example); span exporters are batched, except an in-memory one.
    """
    cfg = config if config is not None else MeshConfig.from_env()
    traces = traces or cfg.otel_traces_exporter
    metrics_exporter = metrics_exporter or cfg.otel_metrics_exporter
    for var, value in (
        ("OTEL_TRACES_EXPORTER", traces),
        ("OTEL_METRICS_EXPORTER", metrics_exporter),
    ):
        if value not in ("console", "otlp", "none"):
            raise ConfigError(f"{var}={value!r} is not supported here; use console, otlp or none")
    sdk_trace = _sdk("opentelemetry.sdk.trace", "OTEL_TRACES_EXPORTER", traces)
    sdk_export = _sdk("opentelemetry.sdk.trace.export", "OTEL_TRACES_EXPORTER", traces)
    sdk_metrics = _sdk("opentelemetry.sdk.metrics", "OTEL_METRICS_EXPORTER", metrics_exporter)
    sdk_mexport = _sdk(
        "opentelemetry.sdk.metrics.export", "OTEL_METRICS_EXPORTER", metrics_exporter
    )
    resource = _sdk("opentelemetry.sdk.resources", "OTEL_TRACES_EXPORTER", traces).Resource.create()
    installed = Telemetry(None, None)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        tp = sdk_trace.TracerProvider(resource=resource)
        exporter = span_exporter or (_span_exporter(traces) if traces != "none" else None)
        if exporter is not None:
            simple = type(exporter).__name__ == "InMemorySpanExporter"
            cls = sdk_export.SimpleSpanProcessor if simple else sdk_export.BatchSpanProcessor
            tp.add_span_processor(cls(exporter))
        trace.set_tracer_provider(tp)
        installed.tracer_provider = tp
    else:
        log.info("a TracerProvider is already installed; configure() left it alone")
    if metric_reader is None and metrics_exporter == "none":
        # A MeterProvider without a reader would make every call pay for measurements that
        # nobody collects (several µs each); "none" installs nothing.
        pass
    elif type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        if metric_reader is not None:
            reader = metric_reader
        else:
            reader = sdk_mexport.PeriodicExportingMetricReader(_metric_exporter(metrics_exporter))
        mp = sdk_metrics.MeterProvider(resource=resource, metric_readers=[reader])
        metrics.set_meter_provider(mp)
        installed.meter_provider = mp
    else:
        log.info("a MeterProvider is already installed; configure() left it alone")
    return installed


def format_trace_tree(spans: list[Any]) -> list[str]:
    """Lines drawing finished SDK spans as a tree (for the demo and for debugging)."""
    by_parent: dict[int | None, list[Any]] = {}
    ids = {s.context.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def describe(s: Any) -> str:
        a: Mapping[str, Any] = s.attributes or {}
        ms = (s.end_time - s.start_time) / 1e6
        bits = [f"{s.name} [{s.kind.name}] {ms:.1f} ms"]
        if "network.peer.address" in a:
            bits.append(f"-> {a['network.peer.address']}:{a['network.peer.port']}")
        if "http.response.status_code" in a:
            bits.append(str(a["http.response.status_code"]))
        if "http.request.resend_count" in a:
            bits.append(f"resend_count={a['http.request.resend_count']}")
        if "error.type" in a:
            bits.append(f"error.type={a['error.type']}")
        return "  ".join(bits)

    def walk(parent: int | None, prefix: str) -> None:
        children = by_parent.get(parent, [])
        for i, s in enumerate(children):
            last = i == len(children) - 1
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            lines.append(prefix + branch + describe(s))
            inner = prefix + ("" if parent is None else ("   " if last else "│  "))
            for e in s.events:
                delay = (e.attributes or {}).get("mesh.retry.delay_s")
                extra = f" after {delay * 1000:.0f} ms" if delay is not None else ""
                lines.append(inner + f"   · {e.name}{extra}")
            walk(s.context.span_id, inner)

    walk(None, "")
    return lines
