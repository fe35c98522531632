"""Whether OpenTelemetry is in use in this process, asked without importing it.

Why: importing OpenTelemetry's API (and the ``typing_extensions`` it pulls in) costs a cold
start about 16 ms of CPU. A process in which nothing has imported ``opentelemetry`` has no SDK,
no current span or baggage and no instrumentation, so meshlib's telemetry would do nothing at
all. The pipeline and the Consul background work ask ``in_use()`` and import the rest of
``meshlib.otel`` only once it is true (an SDK set up, ``opentelemetry-instrument``, an
instrumentation, or the inbound middleware continuing a caller's trace, which needs the API
even without an SDK). This module imports the standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys

__all__ = ["background_context", "in_use", "quiet"]


def in_use() -> bool:
    """True once anything in the process has imported ``opentelemetry``."""
    return "opentelemetry" in sys.modules


def background_context() -> contextvars.Context:
    """An empty ``contextvars.Context`` for meshlib's background work, with HTTP
    instrumentation suppressed when OpenTelemetry is in use (``tracing.background_context``)."""
    if not in_use():
        return contextvars.Context()
    from meshlib.otel.tracing import background_context as quiet_context

    return quiet_context()


def quiet() -> contextlib.AbstractContextManager[None]:
    """HTTP instrumentation suppressed for the block (nothing to suppress without OTel)."""
    if not in_use():
        return contextlib.nullcontext()
    from meshlib.otel.tracing import suppressed_http_instrumentation

    return suppressed_http_instrumentation()
