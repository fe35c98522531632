"""Inbound authorization by intentions, as ASGI and WSGI middleware.

The middleware finds the caller's client certificate where the server put it, names the caller
by its SPIFFE URI, asks ``ConnectServer.authorize`` and answers **403** with the reason when an
intention denies (or when there is no Connect certificate at all); an allowed request reaches
the application with the caller in ``scope["meshlib.caller"]`` / ``environ["meshlib.caller"]``.

Where the certificate comes from: ``scope["extensions"]["tls"]["meshlib.peercert"]`` (set by
``meshlib.connect.uvicorn``'s protocols), the standard ASGI TLS extension's
``client_cert_chain`` (decoded with ``cryptography`` if it is installed), a WSGI environ's
``meshlib.peercert`` (``meshlib.connect.wsgi``'s request handler) or gunicorn's
``gunicorn.socket``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from meshlib.connect.server import Caller, ConnectServer, caller_from_peercert

__all__ = ["ConnectASGIMiddleware", "ConnectWSGIMiddleware", "asgi_caller", "wsgi_caller"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def _from_pem(pem: str) -> dict[str, Any] | None:
    """A PEM client certificate as ``getpeercert()`` shapes it (URI SANs and serial only)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - only without the optional dependency
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    return {
        "subjectAltName": tuple(("URI", u) for u in uris),
        "serialNumber": f"{cert.serial_number:X}",
    }


def asgi_caller(scope: Scope) -> Caller | None:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    peercert = tls.get("meshlib.peercert")
    if peercert is None:
        chain = tls.get("client_cert_chain") or ()
        peercert = _from_pem(chain[0]) if chain else None
    return caller_from_peercert(peercert)


def wsgi_caller(environ: dict[str, Any]) -> Caller | None:
    peercert = environ.get("meshlib.peercert")
    if peercert is None:
        sock = environ.get("gunicorn.socket")
        getpeercert = getattr(sock, "getpeercert", None)
        peercert = getpeercert() if getpeercert is not None else None
    return caller_from_peercert(peercert)


def _denied(service: str, caller: Caller | None, reason: str) -> bytes:
    who = caller.uri if caller is not None else "a caller"
    return f"meshlib: {who} may not call {service!r}: {reason}\n".encode()


class ConnectASGIMiddleware:
    """403 unless the caller's Connect identity is allowed by intentions."""

    def __init__(self, app: ASGIApp, server: ConnectServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        caller = asgi_caller(scope)
        decision = self.server.authorize_cached(caller)
        if decision is None:  # a cache miss asks the agent: off the loop, which never blocks
            decision = await asyncio.to_thread(self.server.authorize, caller)
        if not decision.allowed:
            body = _denied(self.server.service, caller, decision.reason)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope["meshlib.caller"] = caller
        await self.app(scope, receive, send)


class ConnectWSGIMiddleware:
    """The WSGI twin of ``ConnectASGIMiddleware``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], server: ConnectServer) -> None:
        self.app = app
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        caller = wsgi_caller(environ)
        decision = self.server.authorize(caller)
        if not decision.allowed:
            body = _denied(self.server.service, caller, decision.reason)
            start_response(
                "403 Forbidden",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        environ["meshlib.caller"] = caller
        return self.app(environ, start_response)
