"""A small asyncio HTTP/1.1 server protocol: keep-alive, chunked bodies, abortable connections.

Built on ``asyncio.Protocol`` rather than ``http.server`` because FakeConsul must hold a thousand
idle long-polls at once: each parked blocking query costs a future, not a thread. The protocol
also exposes what fault injection needs: a ``closed`` future a parked request can race against,
and ``abort(reset=True)`` to drop a connection with a TCP RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from .wire import Request, Response, text_response

__all__ = ["App", "HttpConnection"]

_log = logging.getLogger(__name__)

App = Callable[[Request, "HttpConnection"], Awaitable[Response | None]]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; None until it is complete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol == -1:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(400, "Bad Request: invalid chunk size") from None
        pos = eol + 2
        if size == 0:
            if buf[pos : pos + 2] == b"\r\n":
                return bytes(body), pos + 2
            end = buf.find(b"\r\n\r\n", pos)
            return (bytes(body), end + 4) if end != -1 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if len(body) > _MAX_BODY:
            raise _BadRequest(413, "Request Entity Too Large")
        pos += size + 2


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests in order and writes the app's responses."""

    def __init__(self, app: App, connections: set[HttpConnection]) -> None:
        self._app = app
        self._connections = connections
        self._buf = bytearray()
        self._eof = False
        self._sent_continue = False
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------- protocol events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        # HTTP/1.1 clients do not half-close: EOF means the client is gone, so a parked
        # blocking query must stop waiting. Keep the transport so a response can still go out.
        self._eof = True
        self._mark_closed()
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._mark_closed()
        self._wake()

    def _mark_closed(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ----------------------------------------------------------------- public API

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def abort(self, *, reset: bool = True) -> None:
        """Drop the connection now; ``reset`` sends a TCP RST instead of a FIN."""
        transport = self.transport
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self._mark_closed()

    # ------------------------------------------------------------------- serving

    async def _serve(self) -> None:
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    break
                keep_alive = self._keep_alive(request)
                try:
                    response = await self._app(request, self)
                except Exception:
                    _log.exception("FakeConsul handler failed")
                    response = text_response(500, "meshlib FakeConsul: internal error")
                if response is None or self.transport is None or self.transport.is_closing():
                    break
                self._write(response, keep_alive, request.version, request.method == "HEAD")
                if not keep_alive:
                    break
        except _BadRequest as exc:
            self._write(text_response(exc.status, exc.message), False, "HTTP/1.1")
        finally:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    async def _next_request(self) -> Request | None:
        while True:
            request = self._try_parse()
            if request is not None:
                return request
            if self._eof or self.transport is None or self.transport.is_closing():
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    def _try_parse(self) -> Request | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end == -1:
            if len(buf) > _MAX_HEAD:
                raise _BadRequest(431, "Request Header Fields Too Large")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "Bad Request")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise _BadRequest(400, "Bad Request: malformed header")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _parse_chunked(buf, start)
            if parsed is None:
                self._maybe_continue(headers)
                return None
            body, consumed = parsed
        else:
            try:
                length = int(headers.get("content-length", "0") or "0")
            except ValueError:
                raise _BadRequest(400, "Bad Request: invalid Content-Length") from None
            if length < 0 or length > _MAX_BODY:
                raise _BadRequest(413, "Request Entity Too Large")
            if len(buf) - start < length:
                self._maybe_continue(headers)
                return None
            body, consumed = bytes(buf[start : start + length]), start + length
        del buf[:consumed]
        self._sent_continue = False
        return _make_request(method, target, version, headers, body)

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue" and not self._sent_continue:
            self._sent_continue = True
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    @staticmethod
    def _keep_alive(request: Request) -> bool:
        connection = request.headers.get("connection", "").lower()
        if request.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    def _write(
        self, response: Response, keep_alive: bool, version: str, head_only: bool = False
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        headers = dict(response.headers)
        headers["Date"] = _http_date()
        headers["Content-Length"] = str(len(response.body))
        if not keep_alive:
            headers["Connection"] = "close"
        elif version == "HTTP/1.0":
            headers["Connection"] = "keep-alive"
        head = [f"HTTP/1.1 {response.status} {phrase}"]
        head.extend(f"{k}: {v}" for k, v in headers.items())
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", errors="replace")
        self.transport.write(data if head_only else data + response.body)


def _make_request(
    method: str, target: str, version: str, headers: dict[str, str], body: bytes
) -> Request:
    if target.startswith(("http://", "https://")):
        split = urlsplit(target)
        raw_path, raw_query = split.path or "/", split.query
    else:
        raw_path, _, raw_query = target.partition("?")
    return Request(
        method=method.upper(),
        path=unquote(raw_path),
        query=parse_qs(raw_query, keep_blank_values=True),
        headers=headers,
        body=body,
        version=version,
        target=target,
    )
