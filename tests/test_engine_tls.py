"""The async engine's own TLS layer (``engine.aio_tls``) against a real TLS server on 127.0.0.1.

The layer replaces asyncio's SSL transport for mesh endpoints, so what asyncio's did must still
hold: many records in one read and one record over many reads, the peer's close_notify as an
end of stream, a handshake refused for a bad certificate or cut short by the server, and a
corrupt record after the handshake failing the exchange without reusing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from meshlib.engine import AsyncEngine
from meshlib.engine.aio_tls import TlsLayer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("users").configure_cert(ctx)
    return ctx


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def _serve(ctx: ssl.SSLContext | None, handle: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def stop() -> AsyncIterator[list[asyncio.Server]]:
    servers: list[asyncio.Server] = []
    yield servers
    for s in servers:
        s.close()
        await s.wait_closed()


def _request(port: int) -> httpx.Request:
    return httpx.Request("GET", f"https://127.0.0.1:{port}/", extensions={"sni_hostname": "users"})


async def test_a_large_body_in_many_records_and_many_reads_arrives_whole(
    ca: trustme.CA, stop: list[asyncio.Server]
) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: about 128 TLS records, read over many events

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    server, port = await _serve(_server_context(ca), handle)
    stop.append(server)
    async with httpx.AsyncClient(transport=AsyncEngine(verify=_client_context(ca))) as client:
        for _ in range(3):  # the same kept-alive session each time
            r = await client.send(_request(port))
            assert r.status_code == 200
            assert r.content == body


async def test_the_peers_close_notify_ends_the_stream_and_the_next_call_reconnects(
    ca: trustme.CA, stop: list[asyncio.Server]
) -> None:
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        # No Content-Length: the body ends with the stream, which close_notify ends.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()  # asyncio's SSL transport sends close_notify, then FIN

    server, port = await _serve(_server_context(ca), handle)
    stop.append(server)
    async with httpx.AsyncClient(transport=AsyncEngine(verify=_client_context(ca))) as client:
        first = await client.send(_request(port))
        second = await client.send(_request(port))
    assert first.content == second.content == b"until the end"
    assert accepted == 2


async def test_a_certificate_from_another_ca_is_refused_at_the_handshake(
    ca: trustme.CA, stop: list[asyncio.Server]
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, port = await _serve(_server_context(trustme.CA()), handle)
    stop.append(server)
    async with httpx.AsyncClient(transport=AsyncEngine(verify=_client_context(ca))) as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.send(_request(port))


async def test_a_server_that_hangs_up_mid_handshake_is_a_connect_error(
    ca: trustme.CA, stop: list[asyncio.Server]
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello's first byte, then hang up
        writer.close()

    server, port = await _serve(None, handle)  # plain TCP: it never answers the handshake
    stop.append(server)
    async with httpx.AsyncClient(transport=AsyncEngine(verify=_client_context(ca))) as client:
        with pytest.raises(httpx.ConnectError, match="handshake"):
            await client.send(_request(port))


async def test_a_corrupt_record_after_the_handshake_fails_the_call_and_the_connection(
    ca: trustme.CA,
) -> None:
    """A TLS server whose second answer is a forged application-data record: the call fails
    with a transport error naming the bad record, and the next call opens a new session."""
    server_ctx = _server_context(ca)
    sessions = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sessions
        sessions += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        raw = writer.get_extra_info("socket")
        # Under the TLS layer: an application-data record header and 40 bytes of garbage.
        raw.send(b"\x17\x03\x03\x00\x28" + b"\x00" * 40)
        await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=AsyncEngine(verify=_client_context(ca))) as client:
            assert (await client.send(_request(port))).content == b"ok"
            with pytest.raises(httpx.TransportError):
                await client.send(_request(port))
            assert (await client.send(_request(port))).content == b"ok"
        assert sessions == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_the_layer_is_the_connections_transport_with_the_tls_details() -> None:
    """What the engine and Connect read from the transport: the SSL object (for the peer's
    certificate), the socket (for a forked child), and flow control passed through."""
    ca = trustme.CA()
    server, port = await _serve(_server_context(ca), _echo_once)
    try:
        loop = asyncio.get_running_loop()
        events: list[str] = []

        class App(asyncio.Protocol):
            def pause_writing(self) -> None:
                events.append("pause")

            def resume_writing(self) -> None:
                events.append("resume")

        layer = TlsLayer(loop, _client_context(ca), "users", App())
        await loop.create_connection(lambda: layer, "127.0.0.1", port)
        await layer.handshake
        assert isinstance(layer, asyncio.Transport)
        assert layer.get_extra_info("ssl_object").getpeercert()["subjectAltName"] == (
            ("DNS", "users"),
        )
        assert layer.get_extra_info("socket") is not None
        assert layer.get_extra_info("cipher")[1] in ("TLSv1.2", "TLSv1.3")
        layer.pause_writing()
        layer.resume_writing()
        assert events == ["pause", "resume"]
        assert not layer.is_closing()
        layer.abort()
        assert layer.is_closing()
    finally:
        server.close()
        await server.wait_closed()


async def _echo_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await reader.read(1)
    writer.close()
