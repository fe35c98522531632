"""The WSGI inbound middleware: admission first, then the caller's deadline and trace for the app.

Admission (``gate``) never makes a worker thread wait: a refused request is answered at once
with its status, ``Retry-After`` and a one-line body, and the thread is free for the next one.
An admitted request holds its in-flight slot until the server closes the response body (PEP
3333 obliges it to call ``close``), so a streamed body counts as in flight while it streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from meshlib.limit.admission import Refusal, Ticket
from meshlib.middleware.gate import Inbound, answer
from meshlib.scope.context import DEADLINE_HEADER, Deadline, deadline_scope, parse_deadline
from meshlib.scope.override import OVERRIDE_HEADER, override_scope

__all__ = ["MeshWSGIMiddleware"]

_WSGI_KEY = "HTTP_" + DEADLINE_HEADER.upper().replace("-", "_")
_WSGI_OVERRIDE = "HTTP_" + OVERRIDE_HEADER.upper().replace("-", "_")


class MeshWSGIMiddleware(Inbound):
    """WSGI middleware: inbound admission, and an incoming ``x-mesh-deadline-ms`` caps outbound
    mesh calls; with ``propagate_override`` an incoming ``Mesh-Override`` follows them while the
    app runs (a streamed body's later chunks do not carry it). The keywords are
    ``gate.Inbound``'s."""

    app: Callable[..., Iterable[bytes]]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seconds = parse_deadline(environ.get(_WSGI_KEY), cap=self.max_deadline)
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        verdict = self.gate.check(headers, environ, seconds)
        if isinstance(verdict, Refusal):
            status, refusal_headers, payload = answer(verdict)
            start_response(status, refusal_headers)
            return [payload]
        deadline = Deadline.after(seconds) if seconds is not None else None
        pin = environ.get(_WSGI_OVERRIDE) if self.propagate_override else None
        from meshlib.otel.tracing import incoming_context  # see MeshASGIMiddleware

        try:
            with deadline_scope(deadline), incoming_context(headers) as ctx, override_scope(pin):
                body = self.app(environ, start_response)
        except Exception:
            if verdict is not None:
                verdict.done(failed=True)
            raise
        if deadline is None and ctx is None and verdict is None:
            return body
        return _ScopedBody(body, deadline, ctx, verdict)


class _ScopedBody:
    """A WSGI body whose chunks are produced inside the deadline scope, one ``next`` at a time,
    and whose ``close`` ends the request's admission.

    A streaming app makes outbound calls while its iterable is consumed, after ``__call__`` has
    returned; entering the scope around each step covers that without buffering the body and
    without leaving the deadline set in the server's own code between chunks.
    """

    def __init__(
        self, body: Iterable[bytes], deadline: Deadline | None, ctx: Any, ticket: Ticket | None
    ) -> None:
        self._body = body
        self._deadline = deadline
        self._ctx = ctx
        self._ticket = ticket

    def __iter__(self) -> Iterator[bytes]:
        from meshlib.otel.tracing import attached

        it = iter(self._body)
        while True:
            with deadline_scope(self._deadline), attached(self._ctx):
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                except Exception:
                    if self._ticket is not None:
                        self._ticket.done(failed=True)
                    raise
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._ticket is not None:
                self._ticket.done()
