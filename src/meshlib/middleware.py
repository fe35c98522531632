"""Inbound middleware (ASGI and WSGI): the caller's deadline and trace continue in outbound calls.

Deadline propagation over plain HTTP: meshlib sends each mesh request's remaining time budget in
``x-mesh-deadline-ms`` (relative milliseconds, like gRPC's ``grpc-timeout``, so no clock
synchronisation is needed). These middlewares read it on the way in and set a deadline in the
context for the request's duration, so every mesh call made while handling the request is
capped by what the original caller is still willing to wait: a retry that cannot finish in the
time left is not even started. A malformed or absent header changes nothing; a huge value is
capped (``max_deadline``) so a hostile caller cannot pin work for days.

Trace context: when no server span is active yet (no OpenTelemetry ASGI/WSGI instrumentation
in front), the middleware extracts ``traceparent``/``tracestate`` and ``baggage`` through the
global propagator and makes them current for the request, so outbound mesh calls continue the
caller's trace. When an instrumentation already started a server span, it has extracted the
context itself and the middleware leaves it alone: no second server span, no double extraction.

``MeshASGIMiddleware`` wraps any ASGI app (FastAPI, Starlette); ``MeshWSGIMiddleware`` wraps any
WSGI app (Flask, Django).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from meshlib.scope.context import DEADLINE_HEADER, Deadline, deadline_scope, parse_deadline

__all__ = ["MeshASGIMiddleware", "MeshWSGIMiddleware"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
_WSGI_KEY = "HTTP_" + DEADLINE_HEADER.upper().replace("-", "_")


class MeshASGIMiddleware:
    """ASGI middleware: an incoming ``x-mesh-deadline-ms`` caps outbound mesh calls."""

    def __init__(self, app: ASGIApp, *, max_deadline: float = 3600.0) -> None:
        self.app = app
        self.max_deadline = max_deadline

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): raw.decode("latin-1") for name, raw in scope.get("headers", ())
        }
        seconds = parse_deadline(headers.get(DEADLINE_HEADER), cap=self.max_deadline)
        deadline = Deadline.after(seconds) if seconds is not None else None
        # Continuing the caller's trace needs OpenTelemetry's API even without an SDK: the
        # first request imports it (``import meshlib`` does not).
        from meshlib.otel.tracing import incoming_context

        with deadline_scope(deadline), incoming_context(headers):
            await self.app(scope, receive, send)


class MeshWSGIMiddleware:
    """WSGI middleware: an incoming ``x-mesh-deadline-ms`` caps outbound mesh calls."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, max_deadline: float = 3600.0):
        self.app = app
        self.max_deadline = max_deadline

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seconds = parse_deadline(environ.get(_WSGI_KEY), cap=self.max_deadline)
        deadline = Deadline.after(seconds) if seconds is not None else None
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        from meshlib.otel.tracing import incoming_context  # see MeshASGIMiddleware

        with deadline_scope(deadline), incoming_context(headers) as ctx:
            body = self.app(environ, start_response)
        if deadline is None and ctx is None:
            return body
        return _ScopedBody(body, deadline, ctx)


class _ScopedBody:
    """A WSGI body whose chunks are produced inside the deadline scope, one ``next`` at a time.

    A streaming app makes outbound calls while its iterable is consumed, after ``__call__`` has
    returned; entering the scope around each step covers that without buffering the body and
    without leaving the deadline set in the server's own code between chunks.
    """

    def __init__(self, body: Iterable[bytes], deadline: Deadline | None, ctx: Any) -> None:
        self._body = body
        self._deadline = deadline
        self._ctx = ctx

    def __iter__(self) -> Iterator[bytes]:
        from meshlib.otel.tracing import attached

        it = iter(self._body)
        while True:
            with deadline_scope(self._deadline), attached(self._ctx):
                try:
                    chunk = next(it)
                except StopIteration:
                    return
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
