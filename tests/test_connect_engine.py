"""meshlib's engines speak Connect's mutual TLS and check the server's SPIFFE identity.

Real HTTPS servers on 127.0.0.1 that require a client certificate, certificates from a
throwaway Connect-style CA, both engines. A server whose certificate names another service is
refused before the request is sent.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytest.importorskip("cryptography")

from _connect_certs import TRUST_DOMAIN, Leaf, ThrowawayCA
from meshlib.connect.certs import Bundle
from meshlib.connect.outbound import ConnectClient
from meshlib.connect.tls import peer_uris, server_context
from meshlib.consul.connect import Leaf as AgentLeaf
from meshlib.consul.connect import Roots
from meshlib.engine import AsyncEngine, SyncEngine
from meshlib.extensions import CONNECT


class StaticSource:
    """A bundle source without an agent: what the watcher would publish."""

    def __init__(self, leaf: Leaf, roots: list[str]) -> None:
        self._subs: list[Callable[[Bundle], None]] = []
        self.bundle = self._make(leaf, roots)
        self.pending = None  # the bundle is there from the start

    @staticmethod
    def _make(leaf: Leaf, roots: list[str]) -> Bundle:
        agent_leaf = AgentLeaf(
            index=1,
            service="web",
            uri=leaf.uri,
            serial=hex(leaf.serial),
            cert_pem=leaf.cert_pem,
            key_pem=leaf.key_pem,
            valid_before="",
            valid_after="",
        )
        return Bundle(agent_leaf, Roots(1, TRUST_DOMAIN, "root", tuple(roots)))

    def subscribe(self, callback: Callable[[Bundle], None]) -> None:
        self._subs.append(callback)

    def rotate(self, leaf: Leaf, roots: list[str]) -> None:
        self.bundle = self._make(leaf, roots)
        for cb in self._subs:
            cb(self.bundle)


@contextmanager
def https_server(leaf: Leaf, roots: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Answers 200 with the caller's SPIFFE URI; records every request it saw."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert isinstance(self.connection, ssl.SSLSocket)
            cert = self.connection.getpeercert()
            caller = ",".join(peer_uris(cert))
            seen.append(f"{caller}|{int(str((cert or {})['serialNumber']), 16)}")
            body = caller.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_context(leaf.cert_pem, leaf.key_pem, roots).wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def _request(port: int, client: ConnectClient, service: str) -> httpx.Request:
    request = httpx.Request("GET", f"http://127.0.0.1:{port}/", headers={"host": service})
    request.extensions[CONNECT] = client.peer(service)
    request.extensions["timeout"] = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    return request


@pytest.fixture
def ca() -> ThrowawayCA:
    return ThrowawayCA()


async def test_async_engine_calls_the_service_that_proves_its_identity(ca: ThrowawayCA) -> None:
    web = ca.leaf("web")
    client = ConnectClient(StaticSource(web, [ca.pem]))
    engine = AsyncEngine()
    with https_server(ca.leaf("users"), [ca.pem]) as (port, seen):
        response = await engine.handle_async_request(_request(port, client, "users"))
        await response.aread()
        assert response.status_code == 200
        assert response.content.decode() == web.uri  # the server saw our identity
    await engine.aclose()
    assert seen == [f"{web.uri}|{web.serial}"]


_WRONG = r"presented spiffe://.*/svc/billing; calling 'users' needs spiffe://.*/svc/users"


async def test_async_engine_refuses_a_server_with_another_identity(ca: ThrowawayCA) -> None:
    client = ConnectClient(StaticSource(ca.leaf("web"), [ca.pem]))
    engine = AsyncEngine()
    with https_server(ca.leaf("billing"), [ca.pem]) as (port, seen):
        with pytest.raises(httpx.ConnectError, match=_WRONG):
            await engine.handle_async_request(_request(port, client, "users"))
    assert seen == []  # never sent
    await engine.aclose()


def test_sync_engine_refuses_a_server_with_another_identity(ca: ThrowawayCA) -> None:
    client = ConnectClient(StaticSource(ca.leaf("web"), [ca.pem]))
    engine = SyncEngine()
    with https_server(ca.leaf("billing"), [ca.pem]) as (port, seen):
        with pytest.raises(httpx.ConnectError, match=_WRONG):
            engine.handle_request(_request(port, client, "users"))
    assert seen == []
    engine.close()


def test_sync_engine_over_connect_and_rotation(ca: ThrowawayCA) -> None:
    first, second = ca.leaf("web"), ca.leaf("web")
    source = StaticSource(first, [ca.pem])
    client = ConnectClient(source)
    engine = SyncEngine(limits=httpx.Limits(max_connections=4, max_keepalive_connections=0))
    with https_server(ca.leaf("users"), [ca.pem]) as (port, seen):
        r1 = engine.handle_request(_request(port, client, "users"))
        r1.read()
        source.rotate(second, [ca.pem])
        r2 = engine.handle_request(_request(port, client, "users"))
        r2.read()
    assert (r1.status_code, r2.status_code) == (200, 200)
    # The connection opened after the rotation presented the new leaf.
    assert seen == [f"{first.uri}|{first.serial}", f"{second.uri}|{second.serial}"]
    engine.close()
