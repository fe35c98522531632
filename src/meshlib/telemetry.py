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
installed is left alone. The SDK work itself is in ``meshlib.otel.sdk``; this entry module only
reads the configuration.
"""

from __future__ import annotations

from typing import Any

from meshlib.config import MeshConfig
from meshlib.otel.sdk import Telemetry, install
from meshlib.otel.tree import format_trace_tree

__all__ = ["Telemetry", "configure", "format_trace_tree"]


def configure(
    *,
    traces: str | None = None,
    metrics_exporter: str | None = None,
    span_exporter: Any | None = None,
    metric_reader: Any | None = None,
    config: MeshConfig | None = None,
) -> Telemetry:
    """Install the SDK with the configured exporters (arguments override ``OTEL_*``).

    What each exporter choice installs, and ``span_exporter`` / ``metric_reader`` (ready-made
    SDK objects, an in-memory exporter in a test for example), are ``meshlib.otel.sdk.install``'s.
    """
    cfg = config if config is not None else MeshConfig.from_env()
    return install(
        traces=traces or cfg.otel_traces_exporter,
        metrics_exporter=metrics_exporter or cfg.otel_metrics_exporter,
        span_exporter=span_exporter,
        metric_reader=metric_reader,
    )
