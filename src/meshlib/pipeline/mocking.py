"""Noticing a mocking library (respx, pytest-httpx) so mesh attempts reach the mocks.

Those libraries patch httpx's or httpcore's transports, *below* any wrapping transport. While one
is active the pipeline sends attempts through httpx's own transport instead of meshlib's engine,
which would otherwise bypass the mocks. This is the only module that imports httpcore.
"""

from __future__ import annotations

import httpcore
import httpx

__all__ = ["mocking_active"]


def mocking_active(sync: bool) -> bool:
    """True while respx, pytest-httpx or similar have replaced httpx's or httpcore's transports."""
    if sync:
        a: object = httpx.HTTPTransport.handle_request
        b: object = httpcore.ConnectionPool.handle_request
    else:
        a = httpx.AsyncHTTPTransport.handle_async_request
        b = httpcore.AsyncConnectionPool.handle_async_request
    return not (
        getattr(a, "__module__", "").startswith("httpx.")
        and getattr(b, "__module__", "").startswith("httpcore.")
    )
