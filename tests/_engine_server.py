"""A scriptable HTTP/1.1 server on 127.0.0.1 for the engine tests, on its own thread.

Why our own: the engine has to be tested against misbehaviour stock servers never show
(hanging, truncating, sending garbage, dropping idle connections, not reading a body,
interim 100 responses), and against both drivers, so the server runs its own event loop
on a background thread that the asyncio tests and the blocking tests can share.
Requests are parsed with httptools; behaviour is chosen by the request path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools

__all__ = ["EngineServer"]


class _Conn(asyncio.Protocol):
    def __init__(self, server: EngineServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.port = 0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.port = transport.get_extra_info("peername")[1]
        self.server.conns.add(self)
        self.server.accepted += 1
        self.server.peak = max(self.server.peak, len(self.server.conns))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.busy = b"", [], bytearray(), True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if self.url.startswith(b"/noread"):
            assert self.transport is not None
            self.transport.pause_reading()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        asyncio.get_running_loop().create_task(self.respond(method))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(
        self, status: str, body: bytes = b"", *, head: bool = False, extra: bytes = b""
    ) -> None:
        te = dict(self.headers).get(b"transfer-encoding", b"-")
        self.write(
            b"HTTP/1.1 %s\r\nContent-Length: %d\r\nX-Peer-Port: %d\r\nX-Request-TE: %s\r\n%s\r\n"
            % (status.encode(), len(body), self.port, te, extra)
            + (b"" if head else body)
        )

    async def respond(self, method: str) -> None:
        parts = urlsplit(self.url.decode())
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path, head = parts.path, method == "HEAD"
        if path == "/echo":
            body = b"would-be-body" if head else bytes(self.body)
            self.send("200 OK", body, head=head, extra=b"X-Method: %s\r\n" % method.encode())
        elif path == "/delay":
            await asyncio.sleep(float(query.get("s", "0.02")))
            self.send("200 OK", b"late")
        elif path == "/chunked":
            self.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(int(query.get("n", "3"))):
                piece = b"chunk-%d;" % i
                self.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.sleep(0)
            self.write(b"0\r\n\r\n")
        elif path == "/big":
            size = int(query["size"])
            self.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Peer-Port: %d\r\n\r\n"
                % (size, self.port)
            )
            self.write(b"x" * size)
        elif path == "/close":
            self.send("200 OK", b"bye", extra=b"Connection: close\r\n")
            self.close()
        elif path == "/nocontent":
            self.write(b"HTTP/1.1 204 No Content\r\nX-Peer-Port: %d\r\n\r\n" % self.port)
        elif path == "/continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.01)
            self.send("201 Created", b"after-100")
        elif path == "/eof":
            self.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
            self.close()
        elif path == "/truncated":
            self.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this")
            self.close()
        elif path == "/slowbody":
            self.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf.")
        elif path == "/reset":
            self.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await asyncio.sleep(0.05)
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()  # with zero linger: RST instead of FIN
        elif path == "/late-garbage":
            self.send("200 OK", b"ok")
            self.busy = False
            await asyncio.sleep(0.02)
            self.write(b"unsolicited bytes on an idle connection")
        elif path == "/garbage":
            self.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif path == "/drop":
            self.close()
        elif path in ("/hang", "/noread"):
            return
        else:
            self.send("404 Not Found")
        self.busy = False


class EngineServer:
    """Start with :meth:`start`, always :meth:`stop`; ``url`` is ``scheme://127.0.0.1:port``."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.conns: set[_Conn] = set()
        self.accepted = 0
        self.peak = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def _call(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def start(self) -> EngineServer:
        self._thread.start()

        async def listen() -> asyncio.Server:
            return await self._loop.create_server(
                lambda: _Conn(self), "127.0.0.1", 0, ssl=self.ssl_context
            )

        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(5)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    def drop_idle(self) -> int:
        """Close every connection not in the middle of a request (like a keep-alive timeout)."""

        def drop() -> int:
            idle = [c for c in self.conns if not c.busy]
            for c in idle:
                c.close()
            return len(idle)

        count: int = self._call(drop)
        return count

    def open_connections(self) -> int:
        count: int = self._call(lambda: len(self.conns))
        return count

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for c in list(self.conns):
                if c.transport is not None:
                    c.transport.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
