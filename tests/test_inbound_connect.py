"""Per-caller inbound limits keyed by the verified mTLS identity, end to end over Connect.

uvicorn serves ``ConnectASGIMiddleware(MeshASGIMiddleware(app))`` over mutual TLS on 127.0.0.1;
callers present Connect leaf certificates for different services. The rate limit is kept per
SPIFFE identity, and a header claiming another caller changes nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytest.importorskip("cryptography")

import uvicorn

import meshlib
from _connect_certs import ThrowawayCA
from meshlib.clock import ManualClock
from meshlib.connect.middleware import ConnectASGIMiddleware
from meshlib.connect.outbound import ConnectClient
from meshlib.connect.server import ConnectServer
from meshlib.connect.uvicorn import config as uvicorn_config
from meshlib.engine import AsyncEngine
from meshlib.extensions import CONNECT
from meshlib.limit import AdmissionPolicy
from test_connect_inbound import StandInAgent, _watcher


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def serve(app: Any, server: ConnectServer) -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn_config(app, server, log_level="error", lifespan="off")
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


async def _get(port: int, client: ConnectClient, engine: AsyncEngine, claim: str) -> int:
    request = httpx.Request(
        "GET", f"http://127.0.0.1:{port}/", headers={"host": "users", "x-mesh-caller": claim}
    )
    request.extensions[CONNECT] = client.peer("users")
    response = await engine.handle_async_request(request)
    await response.aread()
    return response.status_code


async def test_rate_limit_is_kept_per_verified_identity() -> None:
    ca = ThrowawayCA()
    users = _watcher(StandInAgent(ca, "users"))
    web, billing = _watcher(StandInAgent(ca, "web")), _watcher(StandInAgent(ca, "billing"))
    policy = AdmissionPolicy(rate=1, burst=2, caller_header="x-mesh-caller")
    limited = meshlib.MeshASGIMiddleware(hello, admission=policy, clock=ManualClock())
    engine = AsyncEngine()
    try:
        server = ConnectServer(users)
        with serve(ConnectASGIMiddleware(limited, server), server) as p:
            # web claims a new name on every request; it is still one caller: its identity.
            web_codes = [await _get(p, ConnectClient(web), engine, f"n{i}") for i in range(3)]
            billing_codes = [await _get(p, ConnectClient(billing), engine, "n0") for _ in range(2)]
            await engine.aclose()  # before the server stops: it waits for open connections
    finally:
        for w in (users, web, billing):
            w.close()
    assert web_codes == [200, 200, 429]
    assert billing_codes == [200, 200]
    assert limited.mesh_state()["inbound"]["callers"] == 2
