"""Installing an OpenTelemetry SDK for applications that have none: ``meshlib.telemetry.configure``.

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
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

from meshlib.errors import ConfigError

__all__ = ["Telemetry", "install", "memory_exporter"]

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


def memory_exporter() -> Any | None:
    """An SDK ``InMemorySpanExporter`` (for the demo's trace tree), or None without the SDK."""
    try:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    return InMemorySpanExporter()


def install(
    *,
    traces: str,
    metrics_exporter: str,
    span_exporter: Any | None = None,
    metric_reader: Any | None = None,
) -> Telemetry:
    """Install the SDK with the named exporters (``console``, ``otlp`` or ``none``).

    Traces: a ``TracerProvider`` is installed even for ``none`` (new traces then get real ids
    that propagate downstream). Metrics: ``none`` without a ``metric_reader`` installs no
    ``MeterProvider``, since a provider with no reader costs every call and reports nothing.

    ``span_exporter`` / ``metric_reader`` take ready-made SDK objects instead (an in-memory
    exporter in a test, for example); span exporters are batched, except an in-memory one.
    """
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
