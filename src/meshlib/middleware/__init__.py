"""Inbound middleware (ASGI and WSGI): admission, then the caller's deadline and trace continue.

**Admission** (opt-in, ``MESH_INBOUND_*`` or ``admission=AdmissionPolicy(...)``): a token-bucket
rate limit per caller key (429 with ``Retry-After``), an in-flight limit for the whole server,
fixed or adaptive by AIMD on latency (503 with ``Retry-After``), and deadline-aware shedding, on
by default: a request whose propagated deadline has already passed is answered 504 before the
application runs. Every decision is immediate: nothing waits, neither the event loop (ASGI) nor
a worker thread (WSGI). The shared logic is ``gate``; the decisions themselves are
``meshlib.limit.admission``'s, free of I/O.

**Deadline propagation** over plain HTTP: meshlib sends each mesh request's remaining time
budget in ``x-mesh-deadline-ms`` (relative milliseconds, like gRPC's ``grpc-timeout``, so no
clock synchronisation is needed). These middlewares read it on the way in and set a deadline in
the context for the request's duration, so every mesh call made while handling the request is
capped by what the original caller is still willing to wait: a retry that cannot finish in the
time left is not even started. A malformed or absent header changes nothing; a huge value is
capped (``max_deadline``) so a hostile caller cannot pin work for days.

**Trace context**: when no server span is active yet (no OpenTelemetry ASGI/WSGI instrumentation
in front), the middleware extracts ``traceparent``/``tracestate`` and ``baggage`` through the
global propagator and makes them current for the request, so outbound mesh calls continue the
caller's trace. When an instrumentation already started a server span, it has extracted the
context itself and the middleware leaves it alone: no second server span, no double extraction.

``MeshASGIMiddleware`` (``asgi``) wraps any ASGI app (FastAPI, Starlette);
``MeshWSGIMiddleware`` (``wsgi``) wraps any WSGI app (Flask, Django). The package sits beside
``transport`` in the layers because, like it, it reads its defaults from ``meshlib.config``.
"""

from typing import TYPE_CHECKING, Any

from meshlib import lazy

_EXPORTS = {
    "CallerKey": "gate",
    "MeshASGIMiddleware": "asgi",
    "MeshWSGIMiddleware": "wsgi",
    "default_caller_key": "gate",
}

if TYPE_CHECKING:
    from meshlib.middleware.asgi import MeshASGIMiddleware
    from meshlib.middleware.gate import CallerKey, default_caller_key
    from meshlib.middleware.wsgi import MeshWSGIMiddleware

__all__ = [
    "CallerKey",
    "MeshASGIMiddleware",
    "MeshWSGIMiddleware",
    "default_caller_key",
]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
