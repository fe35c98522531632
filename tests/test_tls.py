"""``https://users/`` means TLS to the endpoint with the service name as the server name."""

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import trustme

import meshlib


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[tuple[int, list[str | None]]]:
    """A TLS HTTP/1.1 server on 127.0.0.1 whose certificate names only ``users``."""
    names: list[str | None] = []
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("users").configure_cert(ctx)

    def on_sni(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = on_sni  # type: ignore[assignment]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, names
    finally:
        server.close()
        await server.wait_closed()


async def test_https_uses_service_name_for_sni_and_verification(
    ca: trustme.CA, tls_server: tuple[int, list[str | None]]
) -> None:
    port, names = tls_server
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{port}"]})
    async with meshlib.AsyncMeshClient(discovery=discovery, verify=client_ctx) as client:
        r = await client.get("https://users/")
    assert r.text == "secure"
    assert names == ["users"]


async def test_https_to_an_untrusted_certificate_fails(
    tls_server: tuple[int, list[str | None]],
) -> None:
    port, _ = tls_server
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{port}"]})
    async with meshlib.AsyncMeshClient(discovery=discovery) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("https://users/")


async def test_sync_https_uses_service_name(
    ca: trustme.CA, tls_server: tuple[int, list[str | None]]
) -> None:
    # The server runs in the test's loop, so the sync client runs in a worker thread.
    port, names = tls_server
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{port}"]})

    def call() -> str:
        with meshlib.MeshClient(discovery=discovery, verify=client_ctx) as client:
            return client.get("https://users/").text

    assert await asyncio.to_thread(call) == "secure"
    assert names == ["users"]
