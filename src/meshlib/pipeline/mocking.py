"""Noticing a mocking library (respx, pytest-httpx) so mesh attempts reach the mocks.

Those libraries patch httpx's or httpcore's transports, *below* any wrapping transport. While one
is active the pipeline sends attempts through httpx's own transport instead of meshlib's engine,
which would otherwise bypass the mocks. A request that no mock answers is a mistake in the
test, not a failure of an endpoint: ``is_mock_miss`` tells it apart so it is raised at once
(pytest-httpx reports it as an ``httpx.TimeoutException``, which would otherwise be retried).
This is the only module that imports httpcore, and it does so only once something else has
(httpx imports it lazily, when a transport is built; a library that patches it must have
imported it), so ``import meshlib`` does not pay for it.
"""

from __future__ import annotations

import sys

import httpx

__all__ = ["is_mock_miss", "mocking_active"]


def mocking_active(sync: bool) -> bool:
    """True while respx, pytest-httpx or similar have replaced httpx's or httpcore's transports."""
    a: object = (
        httpx.HTTPTransport.handle_request
        if sync
        else httpx.AsyncHTTPTransport.handle_async_request
    )
    if not getattr(a, "__module__", "").startswith("httpx."):
        return True
    httpcore = sys.modules.get("httpcore")
    if httpcore is None:  # not imported yet, so not patched either
        return False
    pool = httpcore.ConnectionPool if sync else httpcore.AsyncConnectionPool
    b: object = pool.handle_request if sync else pool.handle_async_request
    return not getattr(b, "__module__", "").startswith("httpcore.")


def is_mock_miss(exc: BaseException) -> bool:
    """True when respx or pytest-httpx found no mock for the request (not a mocked error: a test
    that mocks ``httpx.TimeoutException`` still gets it retried)."""
    if type(exc).__name__ == "AllMockedAssertionError" and type(exc).__module__.startswith("respx"):
        return True
    if not isinstance(exc, httpx.TimeoutException):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    frame = tb.tb_frame
    return frame.f_code.co_name == "_request_not_matched" and str(
        frame.f_globals.get("__name__", "")
    ).startswith("pytest_httpx")
