"""The admin endpoint's HTTP layer: read one request, authorise it, route it, write one answer.

Kept apart from ``meshlib.admin.server`` (which owns listening, threads and configuration) so the
security decisions sit in one short, testable place: the token check (constant-time, Bearer or
a browser's Basic password), the loopback-only ``Host`` rule that stops DNS-rebinding pages
from reading an unauthenticated endpoint, and the strict limits on what a request may be. The
protocol is deliberately minimal HTTP/1.1 (one request per connection, ``Connection: close``,
no request bodies): the clients are a browser polling once a second, curl, Prometheus and
``meshlib status``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import math
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from meshlib.admin.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meshlib.admin.metrics import render_prometheus

__all__ = ["MAX_HEAD", "AdminApp", "is_ip", "is_loopback", "serve_connection"]

log = logging.getLogger("meshlib.admin")

MAX_HEAD = 16 * 1024
"""Largest request line plus headers accepted (the stream reader's limit)."""
_MAX_BODY = 64 * 1024
_READ_TIMEOUT = 10.0
_REALM = 'realm="meshlib-admin"'
_PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}

_Reply = tuple[int, list[tuple[str, str]], bytes]


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (no brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for a loopback IP literal (127.0.0.0/8, ::1); names are not resolved."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cache
def _page() -> bytes:
    return resources.files("meshlib.admin").joinpath("page.html").read_bytes()


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; a browser's JSON.parse would reject the whole document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json(state: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(state, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(state), allow_nan=False)
    return text.encode()


def _text(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    body = (message + "\n").encode()
    return status, [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])], body


class AdminApp:
    """Authorisation and routing over a ``state()`` callable, independent of sockets."""

    def __init__(self, state: Callable[[], dict[str, Any]], token: str | None) -> None:
        self._state = state
        self._token = token.encode() if token else None

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        if not header:
            return False
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() == "basic":
            # A browser cannot send a bearer token when it opens a page, but it can send Basic
            # credentials; the token is accepted as the Basic password (any user name).
            try:
                credential = base64.b64decode(credential, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credential.encode(), self._token)

    def _host_allowed(self, host_header: str | None) -> bool:
        """Without a token, only loopback names: a DNS-rebinding page must not read the state."""
        if self._token is not None or not host_header:
            return True
        host = host_header.strip().lower()
        if host.startswith("[") and "]" in host:
            host = host[1 : host.index("]")]  # [::1]:9990
        elif host.count(":") == 1:
            host = host.partition(":")[0]  # 127.0.0.1:9990, localhost:9990
        return host == "localhost" or is_loopback(host)

    def respond(self, method: str, target: str, headers: dict[str, str]) -> _Reply:
        """Status, headers and body for one request (headers keyed in lower case)."""
        if not self._host_allowed(headers.get("host")):
            return _text(421, "this admin endpoint answers only to loopback host names")
        if not self._authorized(headers.get("authorization")):
            challenge = [
                ("WWW-Authenticate", f"Bearer {_REALM}"),
                ("WWW-Authenticate", f'Basic {_REALM}, charset="UTF-8"'),
            ]
            return _text(
                401,
                "401 Unauthorized: send 'Authorization: Bearer <MESH_ADMIN_TOKEN>' "
                "(in a browser: any user name, the token as password)",
                challenge,
            )
        path = target.partition("?")[0]
        if path not in ("/", "/mesh/state", "/mesh/metrics"):
            return _text(404, "not found; try /, /mesh/state or /mesh/metrics")
        if method not in ("GET", "HEAD"):
            return _text(405, "only GET and HEAD", [("Allow", "GET, HEAD")])
        if path == "/":
            html = [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Security-Policy", _PAGE_CSP),
                ("Referrer-Policy", "no-referrer"),
            ]
            return 200, html, _page()
        try:
            state = self._state()
        except Exception:
            log.exception("admin endpoint: mesh_state() failed")
            return _text(500, "mesh_state() failed; see the application's log")
        if path == "/mesh/state":
            return 200, [("Content-Type", "application/json")], _json(state)
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], render_prometheus(state).encode()


def _encode(status: int, headers: list[tuple[str, str]], body: bytes, head_only: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class _Refused(Exception):
    """A request that cannot be parsed; carries the reply to send before closing."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.reply = _text(status, message)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """Method, target and headers; the body of a GET, if any, is read and dropped."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
    except asyncio.LimitOverrunError:
        raise _Refused(431, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise _Refused(400, "malformed header")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _Refused(400, "request bodies are not accepted")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _Refused(400, "bad Content-Length") from None
    if length > _MAX_BODY:
        raise _Refused(413, "request body too large")
    if length > 0:
        await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT)
    return parts[0].upper(), parts[1], headers


async def serve_connection(
    app: AdminApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer the one request on a connection, then close it."""
    try:
        try:
            method, target, headers = await _read_request(reader)
        except _Refused as refused:
            writer.write(_encode(*refused.reply, head_only=False))
        else:
            reply = app.respond(method, target, headers)
            writer.write(_encode(*reply, head_only=method == "HEAD"))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass  # the client went away or never finished its request: nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
