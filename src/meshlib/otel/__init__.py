"""OpenTelemetry: spans, metrics and SDK setup, the only package that imports opentelemetry.

``tracing`` shapes spans by the stable HTTP semantic conventions, ``metrics`` the instruments,
``sdk`` installs an SDK for applications that have none, ``tree`` draws finished spans.
Everything else in meshlib reaches OpenTelemetry through here. Imports L0 modules only: L1.
"""

from meshlib.otel.metrics import (
    DURATION_BUCKETS,
    MeshMetrics,
)
from meshlib.otel.tracing import (
    PassThroughSpan,
    Tracing,
    attached,
    background_context,
    error_type,
    incoming_context,
    redact_url,
    suppressed_http_instrumentation,
    url_port,
)

__all__ = [
    "DURATION_BUCKETS",
    "MeshMetrics",
    "PassThroughSpan",
    "Tracing",
    "attached",
    "background_context",
    "error_type",
    "incoming_context",
    "redact_url",
    "suppressed_http_instrumentation",
    "url_port",
]
