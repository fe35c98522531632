"""Consul Connect in-process: an allowed call, a denied call and a refused plaintext call.

``python -m examples.connect_intentions`` starts an embedded FakeConsul (a real Connect CA and
intentions; no Consul needed), serves a Connect-native ``api`` with uvicorn behind meshlib's
intention middleware, registers it as Connect-native, and calls it three ways: as ``web``
(an intention allows it: 200), as ``billing`` (an intention denies it: 403 with Consul's reason)
and as a plaintext client (the TLS handshake refuses it). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

import meshlib
from meshlib.connect.settings import ConnectSettings
from meshlib.testing.fake_consul import FakeConsul

__all__ = ["Report", "main"]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    allowed: tuple[int, str] = (0, "")
    denied: tuple[int, str] = (0, "")
    plaintext_refused: bool = False
    api_calls: int = 0

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


class Api:
    """The ``api`` service: greets its verified caller by service name."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        caller = scope["meshlib.caller"]  # set by the intention middleware
        body = f"hello {caller.identity.service}\n".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def _serve(config: uvicorn.Config) -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _config(consul: FakeConsul, service: str) -> meshlib.MeshConfig:
    return meshlib.MeshConfig(
        discovery="consul",
        consul=meshlib.ConsulSettings(host="127.0.0.1", port=consul.port),
        connect=ConnectSettings(enabled=True, service=service),
    )


async def _call_as(config: meshlib.MeshConfig) -> tuple[int, str]:
    async with meshlib.AsyncMeshClient(config=config, timeout=10) as client:
        r = await client.get("http://api/hello")
    meshlib.connect_identity(config).close()
    return r.status_code, r.text.strip()


def main(argv: Sequence[str] | None = None) -> Report:
    del argv
    report = Report()
    with FakeConsul(run_checks=False) as consul:
        consul.upsert_intention("web", "api", "allow")
        consul.upsert_intention("billing", "api", "deny", description="billing reads via reports")
        report.say(f"FakeConsul at {consul.url}; trust domain {consul.trust_domain}")
        report.say("intentions: web => api allow; billing => api deny")
        api = Api()
        identity = meshlib.connect_identity(_config(consul, "api"))
        try:
            with _serve(identity.uvicorn_config(api, log_level="error", lifespan="off")) as port:
                reg = meshlib.ServiceRegistration(
                    name="api", port=port, address="127.0.0.1", check="none", connect_native=True
                )
                settings = meshlib.ConsulSettings(host="127.0.0.1", port=consul.port)
                with meshlib.Registrar(reg, settings):
                    report.say(
                        f"api serves Connect mTLS on 127.0.0.1:{port} as {consul.spiffe_uri('api')}"
                    )
                    report.allowed = asyncio.run(_call_as(_config(consul, "web")))
                    report.say(f"web     -> api: {report.allowed[0]} {report.allowed[1]}")
                    report.denied = asyncio.run(_call_as(_config(consul, "billing")))
                    report.say(f"billing -> api: {report.denied[0]} {report.denied[1]}")
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/hello", timeout=5)
                    except httpx.TransportError as exc:
                        report.plaintext_refused = True
                        report.say(f"plaintext -> api: refused ({type(exc).__name__})")
        finally:
            identity.close()
        report.api_calls = api.calls
        report.say(f"api's application ran {api.calls} time(s): the denied call never reached it")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
