"""The per-request override that pins calls to a subset, carried in the context.

``Mesh-Override: <service>=<subset>[, ...]`` on a mesh request pins that call (traffic
management skips the routes and splits of the named services), in the spirit of Linkerd's
``l5d-dtab``: a tester reaches the canary in production without changing any config entry.
When the inbound middleware is told to propagate it, the value of an incoming request is put
in the context for the request's duration, and every *mesh* call made while handling it
carries the header on and obeys it; calls to hosts outside the mesh never get it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["MAX_OVERRIDE", "OVERRIDE_HEADER", "current_override", "override_scope"]

OVERRIDE_HEADER = "mesh-override"
MAX_OVERRIDE = 1024
"""Longest value taken from an incoming request (a longer one is ignored)."""

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "meshlib_override", default=None
)


def current_override() -> str | None:
    """The override propagated from the incoming request, if any."""
    return _override.get()


@contextlib.contextmanager
def override_scope(value: str | None) -> Iterator[None]:
    """Carry ``value`` (an incoming ``Mesh-Override``) to the mesh calls made in this scope."""
    if not value or len(value) > MAX_OVERRIDE or "\r" in value or "\n" in value:
        yield
        return
    token = _override.set(value)
    try:
        yield
    finally:
        _override.reset(token)
