"""The asyncio engine's Connect connections run TLS on the SSLSocket itself (``tls_socket``):
everything asyncio's own TLS transport did must still hold.

Real mutual-TLS servers on 127.0.0.1 (the stdlib HTTP server wrapped in a Connect server
context, certificates from a throwaway Connect-style CA), ``AsyncEngine`` with a Connect peer:
large bodies both ways with the socket buffers full (write retries, flow control, reads paused
and resumed with decrypted bytes held by OpenSSL), a server that closes, a server that never
finishes the handshake, a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytest.importorskip("cryptography")

from _connect_certs import ThrowawayCA
from meshlib.connect.outbound import ConnectClient
from meshlib.connect.tls import server_context
from meshlib.engine import AsyncEngine
from meshlib.engine.tls_socket import SSLSocketTransport, open_connection
from meshlib.extensions import CONNECT
from test_connect_engine import StaticSource

BIG = 6 * 1024 * 1024 + 123  # far past every socket buffer and the 64 KiB high-water marks


def _body(n: int) -> bytes:
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


@contextmanager
def mtls_server(ca: ThrowawayCA) -> Iterator[tuple[int, list[int], list[str]]]:
    """``/big`` answers BIG bytes, ``/echo`` the SHA-256 of the body it read (after a pause,
    so the client's writes block), ``/close`` answers and closes; records each connection and
    each digest it computed."""
    connections: list[int] = []
    digests: list[str] = []
    leaf = ca.leaf("users")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(id(self.connection))

        def _answer(self, body: bytes, close: bool = False) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            if close:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            if close:
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path == "/big":
                self._answer(_body(BIG))
            else:
                self._answer(b"closing", close=self.path == "/close")

        def do_POST(self) -> None:
            time.sleep(0.3)  # let the client's socket buffer fill: its writes must wait
            n = int(self.headers["content-length"])
            digest = hashlib.sha256()
            while n:
                chunk = self.rfile.read(min(n, 65536))
                assert chunk, "client closed mid-body"
                digest.update(chunk)
                n -= len(chunk)
            digests.append(digest.hexdigest())
            self._answer(digest.hexdigest().encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_context(leaf.cert_pem, leaf.key_pem, [ca.pem]).wrap_socket(
        server.socket, server_side=True
    )
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server.server_address[1], connections, digests
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def _wait_for(items: list[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not items and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def ca() -> ThrowawayCA:
    return ThrowawayCA()


def _request(
    client: ConnectClient, port: int, path: str, method: str = "GET", body: bytes = b""
) -> httpx.Request:
    request = httpx.Request(method, f"http://127.0.0.1:{port}{path}", content=body)
    request.extensions[CONNECT] = client.peer("users")
    request.extensions["timeout"] = {"connect": 2.0, "read": 10.0, "write": 10.0, "pool": 5.0}
    return request


def _client(ca: ThrowawayCA) -> ConnectClient:
    return ConnectClient(StaticSource(ca.leaf("web"), [ca.pem]))


async def test_large_bodies_both_ways_over_one_kept_alive_connection(ca: ThrowawayCA) -> None:
    client = _client(ca)
    engine = AsyncEngine()
    with mtls_server(ca) as (port, connections, _):
        upload = _body(BIG)
        r1 = await engine.handle_async_request(_request(client, port, "/echo", "POST", upload))
        await r1.aread()
        r2 = await engine.handle_async_request(_request(client, port, "/big"))
        chunks = []
        async for chunk in r2.aiter_bytes():  # a slow reader: the engine pauses and resumes
            chunks.append(chunk)
            if len(chunks) % 16 == 0:
                await asyncio.sleep(0.01)
        r3 = await engine.handle_async_request(_request(client, port, "/small"))
        await r3.aread()
    await engine.aclose()
    assert r1.status_code == 200
    assert r1.content.decode() == hashlib.sha256(upload).hexdigest()
    assert b"".join(chunks) == _body(BIG)
    assert r3.content == b"closing"
    assert len(connections) == 1  # all three on one connection, kept alive through it all


async def test_a_streamed_upload_in_small_chunks_queues_behind_a_blocked_write(
    ca: ThrowawayCA,
) -> None:
    upload = _body(BIG)

    async def chunks() -> Any:
        for i in range(0, len(upload), 16384):
            yield upload[i : i + 16384]

    client = _client(ca)
    engine = AsyncEngine()
    with mtls_server(ca) as (port, _, digests):
        request = _request(client, port, "/echo", "POST")
        request = httpx.Request(
            "POST",
            request.url,
            content=chunks(),
            headers={"content-length": str(len(upload))},
            extensions=request.extensions,
        )
        response = await engine.handle_async_request(request)
        await response.aread()
    await engine.aclose()
    assert response.content.decode() == hashlib.sha256(upload).hexdigest() == digests[0]


async def test_close_sends_what_is_queued_first(ca: ThrowawayCA) -> None:
    upload = _body(BIG)
    head = f"POST /echo HTTP/1.1\r\nhost: users\r\ncontent-length: {len(upload)}\r\n\r\n".encode()
    lost = asyncio.get_running_loop().create_future()

    class Quiet(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(exc)

    ctx = _client(ca).context()
    with mtls_server(ca) as (port, _, digests):
        loop = asyncio.get_running_loop()
        transport = await open_connection(loop, Quiet(), "127.0.0.1", port, ctx, None)
        transport.write(head)
        transport.write(upload)
        assert transport.get_write_buffer_size() > 0  # the server is not reading yet
        transport.close()
        assert transport.is_closing()
        assert await asyncio.wait_for(lost, 10.0) is None
        await asyncio.to_thread(_wait_for, digests, 5.0)
    assert digests == [hashlib.sha256(upload).hexdigest()]  # every byte went out before close


async def test_the_connection_runs_on_the_sslsocket_transport(ca: ThrowawayCA) -> None:
    client = _client(ca)
    engine = AsyncEngine()
    seen: list[Any] = []
    with mtls_server(ca) as (port, _, _):
        response = await engine.handle_async_request(_request(client, port, "/small"))
        await response.aread()
        for pool in engine._pools.values():  # the pool's one idle connection
            seen.extend(type(c.transport) for c in pool.idle)
    await engine.aclose()
    assert seen == [SSLSocketTransport]


async def test_a_server_that_closes_is_not_reused(ca: ThrowawayCA) -> None:
    client = _client(ca)
    engine = AsyncEngine()
    with mtls_server(ca) as (port, connections, _):
        first = await engine.handle_async_request(_request(client, port, "/close"))
        await first.aread()
        await asyncio.sleep(0.1)  # the server's close arrives
        second = await engine.handle_async_request(_request(client, port, "/small"))
        await second.aread()
    await engine.aclose()
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(connections) == 2


async def test_a_handshake_that_never_completes_times_out_and_closes_the_socket(
    ca: ThrowawayCA,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    closed = threading.Event()

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        conn.settimeout(5.0)
        while conn.recv(4096):  # swallow the ClientHello, never answer
            pass
        closed.set()  # the client gave up and closed its end

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    engine = AsyncEngine()
    request = _request(_client(ca), port, "/")
    request.extensions["timeout"] = {"connect": 0.3, "read": 1.0, "write": 1.0, "pool": 1.0}
    started = time.monotonic()
    try:
        with pytest.raises(httpx.ConnectTimeout):
            await engine.handle_async_request(request)
        assert time.monotonic() - started < 2.0
        assert await asyncio.to_thread(closed.wait, 5.0)
    finally:
        await engine.aclose()
        t.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


async def test_a_port_nobody_listens_on_is_a_connect_error(ca: ThrowawayCA) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        engine = AsyncEngine()
        with pytest.raises(httpx.ConnectError):
            await engine.handle_async_request(_request(_client(ca), port, "/"))
        await engine.aclose()


async def test_a_server_without_the_callers_roots_fails_the_handshake(ca: ThrowawayCA) -> None:
    other = ThrowawayCA("Another CA")
    client = ConnectClient(StaticSource(other.leaf("web"), [other.pem]))
    engine = AsyncEngine()
    with mtls_server(ca) as (port, _, _):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await engine.handle_async_request(_request(client, port, "/small"))
    await engine.aclose()


def test_the_transport_reports_what_asyncio_transports_report(ca: ThrowawayCA) -> None:
    async def main() -> dict[str, Any]:
        client = _client(ca)
        engine = AsyncEngine()
        info: dict[str, Any] = {}
        with mtls_server(ca) as (port, _, _):
            response = await engine.handle_async_request(_request(client, port, "/small"))
            await response.aread()
            for pool in engine._pools.values():
                for conn in pool.idle:
                    tr = conn.transport
                    assert tr is not None
                    info = {
                        "peername": tr.get_extra_info("peername"),
                        "ssl": isinstance(tr.get_extra_info("ssl_object"), ssl.SSLSocket),
                        "closing": tr.is_closing(),
                        "eof": tr.can_write_eof(),
                        "buffer": tr.get_write_buffer_size(),
                    }
        await engine.aclose()
        return info

    info = asyncio.run(main())
    assert info["peername"][0] == "127.0.0.1"
    assert info["ssl"] is True
    assert (info["closing"], info["eof"], info["buffer"]) == (False, False, 0)
