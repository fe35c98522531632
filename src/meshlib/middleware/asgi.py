"""The ASGI inbound middleware: admission first, then the caller's deadline and trace for the app.

Admission (``gate``) is decided synchronously, in O(1), before the application is called: a
refused request is answered from here and the event loop never waits on a limit, so requests
that are admitted keep being served while others are refused. An admitted request holds its
in-flight slot until the application returns (its response sent), and reports its latency to
an adaptive limit then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meshlib.limit.admission import Refusal
from meshlib.middleware.gate import Inbound, answer
from meshlib.scope.context import DEADLINE_HEADER, Deadline, deadline_scope, parse_deadline
from meshlib.scope.override import OVERRIDE_HEADER, override_scope

__all__ = ["MeshASGIMiddleware"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class MeshASGIMiddleware(Inbound):
    """ASGI middleware: inbound admission, and an incoming ``x-mesh-deadline-ms`` caps outbound
    mesh calls; with ``propagate_override`` an incoming ``Mesh-Override`` follows them. The
    keywords (``admission``, ``config``, ``caller_key``, ``clock``, ...) are ``gate.Inbound``'s."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): raw.decode("latin-1")
            for name, raw in scope.get("headers", ())
        }
        seconds = parse_deadline(headers.get(DEADLINE_HEADER), cap=self.max_deadline)
        verdict = self.gate.check(headers, scope, seconds)
        if isinstance(verdict, Refusal):
            await _refuse(send, verdict)
            return
        deadline = Deadline.after(seconds) if seconds is not None else None
        pin = headers.get(OVERRIDE_HEADER) if self.propagate_override else None
        # Continuing the caller's trace needs OpenTelemetry's API even without an SDK: the
        # first request imports it (``import meshlib`` does not).
        from meshlib.otel.tracing import incoming_context

        try:
            with deadline_scope(deadline), incoming_context(headers), override_scope(pin):
                await self.app(scope, receive, send)
        except Exception:
            if verdict is not None:
                verdict.done(failed=True)
            raise
        finally:
            if verdict is not None:
                verdict.done()


async def _refuse(send: Any, refusal: Refusal) -> None:
    _, headers, body = answer(refusal)
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
