"""OpenTelemetry: spans, metrics and SDK setup, the only package that imports opentelemetry.

``tracing`` shapes spans by the stable HTTP semantic conventions, ``metrics`` the instruments,
``sdk`` installs an SDK for applications that have none, ``tree`` draws finished spans.
Everything else in meshlib reaches OpenTelemetry through here. Imports L0 modules only: L1.
``gate`` says whether OpenTelemetry is in use without importing it, and the names below are
imported on first use, so ``import meshlib`` does not import OpenTelemetry.
"""

from typing import Any

from meshlib import lazy

_EXPORTS = {
    "DURATION_BUCKETS": "metrics",
    "MeshMetrics": "metrics",
    "PassThroughSpan": "tracing",
    "Tracing": "tracing",
    "attached": "tracing",
    "background_context": "tracing",
    "error_type": "tracing",
    "incoming_context": "tracing",
    "redact_url": "tracing",
    "suppressed_http_instrumentation": "tracing",
    "url_port": "tracing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
