"""The inbound side of Connect: a uvicorn server over mutual TLS, intentions, rotation.

A real uvicorn on 127.0.0.1 serves an app behind ``ConnectASGIMiddleware`` with
``ConnectServer.ssl_context``; callers use meshlib's engine over Connect. The agent here is a
small in-process stand-in with the agent's Connect answers (FakeConsul's CA covers the agent
itself); certificates come from a throwaway Connect-style CA.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import pytest

pytest.importorskip("cryptography")
uvicorn = pytest.importorskip("uvicorn")

from _connect_certs import TRUST_DOMAIN, Leaf, ThrowawayCA  # noqa: E402
from meshlib.connect.certs import CertificateWatcher  # noqa: E402
from meshlib.connect.middleware import ConnectASGIMiddleware  # noqa: E402
from meshlib.connect.outbound import ConnectClient  # noqa: E402
from meshlib.connect.server import ConnectServer  # noqa: E402
from meshlib.connect.uvicorn import config as uvicorn_config  # noqa: E402
from meshlib.consul.connect import Leaf as AgentLeaf  # noqa: E402
from meshlib.consul.connect import Roots  # noqa: E402
from meshlib.engine import AsyncEngine  # noqa: E402
from meshlib.extensions import CONNECT  # noqa: E402


class StandInAgent:
    """The agent's Connect answers for one service, with blocking reads that wake on change."""

    def __init__(self, ca: ThrowawayCA, service: str, deny: set[str] | None = None) -> None:
        self.address = "127.0.0.1:8500"
        self.ca = ca
        self.service = service
        self.deny = deny or set()
        self.index = 1
        self.leaf_obj = ca.leaf(service)
        self.authorize_calls = 0
        self._changed: asyncio.Event | None = None

    def rotate(self, loop: asyncio.AbstractEventLoop) -> Leaf:
        self.leaf_obj = self.ca.leaf(self.service)
        self.index += 1
        loop.call_soon_threadsafe(self._wake)
        return self.leaf_obj

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _block(self, index: int) -> None:
        if index >= self.index:
            self._changed = asyncio.Event()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 5)

    async def roots(self, index: int = 0) -> Roots:
        if index:
            await asyncio.sleep(5)  # the roots never change here: a blocking read just waits
        return Roots(1, TRUST_DOMAIN, "root", (self.ca.pem,))

    async def leaf(self, service: str, index: int = 0) -> AgentLeaf:
        await self._block(index)
        leaf = self.leaf_obj
        return AgentLeaf(
            self.index, service, leaf.uri, hex(leaf.serial), leaf.cert_pem, leaf.key_pem, "", ""
        )

    async def authorize(self, target: str, uri: str, serial: str) -> tuple[bool, str]:
        self.authorize_calls += 1
        service = uri.rsplit("/", 1)[-1]
        if service in self.deny:
            return False, f"Matched L4 intention: DENY default/{service} => default/{target}"
        return True, f"Matched L4 intention: ALLOW default/{service} => default/{target}"

    async def aclose(self) -> None:
        pass


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    caller = scope.get("meshlib.caller")
    body = (caller.uri if caller is not None else "?").encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(server: ConnectServer) -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn_config(
        ConnectASGIMiddleware(hello, server), server, log_level="error", lifespan="off"
    )
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        srv.should_exit = True
        t.join(10)
        sock.close()


@pytest.fixture
def ca() -> ThrowawayCA:
    return ThrowawayCA()


def _watcher(agent: StandInAgent) -> CertificateWatcher:
    w = CertificateWatcher(agent, agent.service, first_timeout=5)  # type: ignore[arg-type]
    w.start()
    return w


async def _get(port: int, client: ConnectClient, engine: AsyncEngine) -> httpx.Response:
    request = httpx.Request("GET", f"http://127.0.0.1:{port}/", headers={"host": "users"})
    request.extensions[CONNECT] = client.peer("users")
    response = await engine.handle_async_request(request)
    await response.aread()
    return response


async def test_allowed_caller_gets_200_and_denied_caller_gets_403(ca: ThrowawayCA) -> None:
    users = _watcher(StandInAgent(ca, "users", deny={"billing"}))
    web, billing = _watcher(StandInAgent(ca, "web")), _watcher(StandInAgent(ca, "billing"))
    engine = AsyncEngine()
    try:
        with serve(ConnectServer(users)) as port:
            ok = await _get(port, ConnectClient(web), engine)
            no = await _get(port, ConnectClient(billing), engine)
            await engine.aclose()  # before the server stops: it waits for open connections
    finally:
        for w in (users, web, billing):
            w.close()
    assert ok.status_code == 200
    assert ok.content.decode().endswith("/svc/web")  # the app sees its verified caller
    assert no.status_code == 403
    assert b"DENY default/billing => default/users" in no.content


async def test_plaintext_client_is_refused(ca: ThrowawayCA) -> None:
    users = _watcher(StandInAgent(ca, "users"))
    try:
        with serve(ConnectServer(users)) as port:
            async with httpx.AsyncClient() as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get(f"http://127.0.0.1:{port}/")
            tls_without_cert = ssl.create_default_context(cadata=ca.pem)
            tls_without_cert.check_hostname = False
            async with httpx.AsyncClient(verify=tls_without_cert) as anonymous:
                with pytest.raises(httpx.TransportError):
                    await anonymous.get(f"https://127.0.0.1:{port}/")
    finally:
        users.close()


async def test_rotation_under_a_steady_stream_of_calls_loses_nothing(ca: ThrowawayCA) -> None:
    users_agent = StandInAgent(ca, "users")
    users, web = _watcher(users_agent), _watcher(StandInAgent(ca, "web"))
    client = ConnectClient(web)
    engine = AsyncEngine(limits=httpx.Limits(max_connections=8, max_keepalive_connections=0))
    statuses: list[int] = []
    try:
        with serve(ConnectServer(users)) as port:
            for i in range(30):
                if i in (10, 20):  # the server's leaf rotates twice mid-stream
                    assert users._loop is not None
                    users_agent.rotate(users._loop)
                    for _ in range(100):
                        if users.rotations >= i // 10:
                            break
                        await asyncio.sleep(0.01)
                r = await _get(port, client, engine)
                statuses.append(r.status_code)
            await engine.aclose()
    finally:
        users.close()
        web.close()
    assert statuses == [200] * 30
    assert users.rotations == 2
