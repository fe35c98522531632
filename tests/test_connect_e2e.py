"""Consul Connect end to end: meshlib clients and uvicorn servers with real certificates from
FakeConsul's CA, on 127.0.0.1.

Every piece is the real one: ``ConnectAgent`` reads the agent's CA endpoints with blocking
queries, ``CertificateWatcher`` keeps the leaf and roots, ``AsyncMeshClient`` discovers Connect
endpoints from ``/v1/health/connect`` and calls them over mutual TLS, and the servers present
their own leaves and check intentions through ``/v1/agent/connect/authorize``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

import meshlib
from meshlib.admin.metrics import render_prometheus
from meshlib.connect.settings import ConnectSettings
from meshlib.consul.connect import ConnectUnavailable
from meshlib.identity import ConnectIdentity, connect_identity
from meshlib.testing.fake_consul import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    with FakeConsul(run_checks=False) as fake:
        yield fake


def _settings(fake: FakeConsul) -> meshlib.ConsulSettings:
    return meshlib.ConsulSettings(host="127.0.0.1", port=fake.port)


def _config(fake: FakeConsul, service: str, **connect: Any) -> meshlib.MeshConfig:
    return meshlib.MeshConfig(
        discovery="consul",
        consul=_settings(fake),
        consul_options=meshlib.ConsulOptions(min_interval=0.01, first_timeout=5.0),
        connect=ConnectSettings(enabled=True, service=service, **connect),
    )


class App:
    """A small ASGI app that answers with the verified caller and counts its calls."""

    def __init__(self, name: str, call: tuple[meshlib.MeshConfig, str] | None = None) -> None:
        self.name = name
        self.calls = 0
        self._call = call
        self._client: meshlib.AsyncMeshClient | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        caller = scope.get("meshlib.caller")
        body = f"{self.name} saw {caller.identity.service if caller else '?'}"
        if self._call is not None and scope["path"] == "/chain":
            if self._client is None:  # made on the server's own loop
                self._client = meshlib.AsyncMeshClient(config=self._call[0], timeout=10)
            downstream = await self._client.get(self._call[1])
            body += f"; {downstream.text}"
        data = body.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": data})


@contextmanager
def serve(identity: ConnectIdentity, app: App) -> Iterator[int]:
    """``app`` over Connect mTLS with intention checks, on a port of 127.0.0.1."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = identity.uvicorn_config(app, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def connect_service(
    fake: FakeConsul, name: str, app: App, *, identity_of: str | None = None, instance: str = "1"
) -> Iterator[ConnectIdentity]:
    """A Connect-native instance of ``name`` (presenting ``identity_of``'s leaf, if given)."""
    identity = ConnectIdentity(identity_of or name, _settings(fake), authz_ttl=0.2)
    try:
        with serve(identity, app) as port:
            fake.register_service(
                name,
                service_id=f"{name}-{instance}",
                address="127.0.0.1",
                port=port,
                connect={"Native": True},
            )
            yield identity
    finally:
        identity.close()


async def test_two_services_call_each_other_over_mutual_tls(consul: FakeConsul) -> None:
    web_cfg, api_cfg = _config(consul, "web"), _config(consul, "api")
    web_app, api_app = App("web"), App("api", call=(api_cfg, "http://web/hello"))
    with (
        connect_service(consul, "web", web_app),
        connect_service(consul, "api", api_app),
    ):
        async with meshlib.AsyncMeshClient(config=web_cfg, timeout=10) as client:
            r = await client.get("http://api/chain")
            state = client.mesh_state()
        # A plaintext client, and a TLS client without a Connect certificate, are refused.
        port = next(p for p in _ports(consul, "api"))
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{port}/")
        async with httpx.AsyncClient(timeout=5, verify=False) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.get(f"https://127.0.0.1:{port}/")
        await api_app._client.aclose() if api_app._client else None
        connect_identity(web_cfg).close()
        connect_identity(api_cfg).close()
    assert r.status_code == 200
    # api verified web's certificate, web verified api's (and api called web over Connect).
    assert r.text == "api saw web; web saw api"
    assert state["connect"]["uri"] == consul.spiffe_uri("web")
    assert state["connect"]["serial"]
    assert 3600 < state["connect"]["leaf_expires_in_s"] <= 72 * 3600  # FakeConsul's 72 h leaf
    text = render_prometheus(state)
    assert 'meshlib_connect_leaf_expires_in_seconds{service="web"} ' in text
    assert 'meshlib_connect_errors_total{service="web"} 0' in text


def _ports(fake: FakeConsul, service: str) -> list[int]:
    entries = httpx.get(f"{fake.url}/v1/health/connect/{service}").json()
    return [e["Service"]["Port"] for e in entries]


async def test_a_denied_intention_gives_403_with_the_reason_and_is_not_retried(
    consul: FakeConsul,
) -> None:
    consul.upsert_intention("web", "api", "deny")
    consul.upsert_intention("billing", "api", "allow")
    app = App("api")
    web_cfg, billing_cfg = _config(consul, "web"), _config(consul, "billing")
    with connect_service(consul, "api", app):
        async with (
            meshlib.AsyncMeshClient(config=web_cfg, timeout=10) as web,
            meshlib.AsyncMeshClient(config=billing_cfg, timeout=10) as billing,
        ):
            denied = await web.get("http://api/x")
            allowed = await billing.get("http://api/x")
        connect_identity(web_cfg).close()
        connect_identity(billing_cfg).close()
    assert denied.status_code == 403
    assert "may not call 'api'" in denied.text
    assert "web" in denied.text
    assert "DENY" in denied.text.upper()
    assert allowed.status_code == 200
    assert allowed.text == "api saw billing"
    assert app.calls == 1  # the denied call never reached the application


async def test_a_server_with_another_services_certificate_is_refused_and_the_call_fails_over(
    consul: FakeConsul,
) -> None:
    good, impostor = App("api"), App("impostor")
    cfg = _config(consul, "web")
    with (
        connect_service(consul, "api", good, instance="good"),
        connect_service(consul, "api", impostor, identity_of="billing", instance="bad"),
    ):
        async with meshlib.AsyncMeshClient(config=cfg, timeout=10) as client:
            statuses = [(await client.get("http://api/x")).status_code for _ in range(20)]
            state = client.mesh_state()
        connect_identity(cfg).close()
    assert statuses == [200] * 20
    assert impostor.calls == 0  # not one request was sent to the wrong identity
    assert good.calls == 20
    eps = {e["address"]: e for e in state["services"]["api"]["endpoints"]}
    bad = [e for e in eps.values() if e["failures"] or e["state"] != "alive"]
    assert len(bad) == 1, eps


async def test_root_rotation_and_leaf_expiry_under_a_stream_of_calls_lose_nothing(
    consul: FakeConsul,
) -> None:
    consul.set_leaf_cert_ttl(4.0)  # renewed by the agent ahead of expiry, while calls go on
    app = App("api")
    cfg = _config(consul, "web")
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=0)  # a handshake a call
    statuses: list[int] = []
    with connect_service(consul, "api", app) as api:
        async with meshlib.AsyncMeshClient(config=cfg, timeout=10, limits=limits) as client:
            web = connect_identity(cfg)
            first_serial = web.wait().leaf.serial
            started = time.monotonic()
            rotated = False
            while time.monotonic() - started < 5.0:
                if not rotated and time.monotonic() - started > 1.0:
                    consul.rotate_ca()
                    rotated = True
                statuses.append((await client.get("http://api/x")).status_code)
                await asyncio.sleep(0.02)
            last_serial = web.wait().leaf.serial
            web_rotations, api_rotations = web.watcher.rotations, api.watcher.rotations
        web.close()
    assert set(statuses) == {200}, statuses
    assert len(statuses) > 50
    assert last_serial != first_serial
    assert web_rotations >= 2
    assert api_rotations >= 2


def test_the_sync_client_calls_over_connect(consul: FakeConsul) -> None:
    app = App("api")
    cfg = _config(consul, "web")
    with connect_service(consul, "api", app):
        with meshlib.MeshClient(config=cfg, timeout=10) as client:
            r = client.get("http://api/x")
        connect_identity(cfg).close()
    assert r.status_code == 200
    assert r.text == "api saw web"


async def test_plain_services_and_per_client_opt_out(consul: FakeConsul) -> None:
    legacy = Upstream(UpstreamBehaviour(name="legacy"))
    await legacy.start()
    try:
        consul.register_service("legacy", address="127.0.0.1", port=legacy.port)
        cfg = _config(consul, "web", plain=("legacy",))
        async with meshlib.AsyncMeshClient(config=cfg, timeout=10) as client:
            r = await client.get("http://legacy/")
        plain_cfg = _config(consul, "web")
        async with meshlib.AsyncMeshClient(config=plain_cfg, connect=False, timeout=10) as off:
            r2 = await off.get("http://legacy/")
            assert "connect" not in off.mesh_state()
        connect_identity(cfg).close()
    finally:
        await legacy.stop()
    assert r.status_code == 200
    assert r2.status_code == 200


async def test_an_agent_without_connect_gives_a_clear_error(consul: FakeConsul) -> None:
    consul.set_connect_enabled(False)
    consul.register_service("api", address="127.0.0.1", port=1, connect={"Native": True})
    cfg = _config(consul, "web")
    async with meshlib.AsyncMeshClient(config=cfg, timeout=5) as client:
        with pytest.raises(ConnectUnavailable, match="Connect enabled") as info:
            await client.get("http://api/x")
    connect_identity(cfg).close()
    assert "token" not in str(info.value).lower() or "may this token" in str(info.value)


def test_registration_can_mark_the_service_connect_native(consul: FakeConsul) -> None:
    reg = meshlib.ServiceRegistration(name="api", port=8443, check="none", connect_native=True)
    with meshlib.Registrar(reg, _settings(consul)):
        listed = httpx.get(f"{consul.url}/v1/health/connect/api").json()
        agent = httpx.get(f"{consul.url}/v1/agent/services").json()
    assert [e["Service"]["Port"] for e in listed] == [8443]
    assert agent[reg.service_id]["Connect"]["Native"] is True


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MESH_CONNECT": "true", "MESH_DISCOVERY": "consul"}, "MESH_SERVICE_NAME"),
        ({"MESH_CONNECT": "true", "MESH_CONNECT_SERVICE": "web"}, "needs Consul discovery"),
        ({"MESH_CONNECT": "maybe"}, "MESH_CONNECT='maybe' is not a boolean"),
        (
            {"MESH_CONNECT": "1", "CONSUL_HTTP_ADDR": "127.0.0.1:1", "MESH_CONNECT_SERVICE": "a b"},
            "not a Consul service name",
        ),
        (
            {"MESH_CONNECT": "1", "MESH_CONNECT_SERVICE": "w", "MESH_CONNECT_AUTHZ_TTL": "0"},
            "MESH_CONNECT_AUTHZ_TTL",
        ),
    ],
)
def test_bad_connect_settings_fail_at_start(env: dict[str, str], needle: str) -> None:
    with pytest.raises(meshlib.ConfigError, match=needle):
        meshlib.MeshConfig.from_env(env)


def test_connect_needs_meshlibs_own_engine(consul: FakeConsul) -> None:
    cfg = meshlib.MeshConfig(
        discovery="consul",
        consul=_settings(consul),
        engine="httpx",
        connect=ConnectSettings(enabled=True, service="web"),
    )
    with pytest.raises(meshlib.ConfigError, match="MESH_ENGINE=fast"):
        meshlib.AsyncMeshClient(config=cfg)


def test_a_wsgi_service_over_connect_allows_and_denies_by_intention(consul: FakeConsul) -> None:
    from meshlib.connect.wsgi import make_server

    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["meshlib.caller"].identity.service)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"orders ok"]

    consul.upsert_intention("billing", "orders", "deny")
    identity = ConnectIdentity("orders", _settings(consul), authz_ttl=0.2)
    httpd = make_server(identity.wsgi(app), identity.server())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    web_cfg, billing_cfg = _config(consul, "web"), _config(consul, "billing")
    try:
        consul.register_service(
            "orders", address="127.0.0.1", port=httpd.server_port, connect={"Native": True}
        )
        with meshlib.MeshClient(config=web_cfg, timeout=10) as web:
            ok = web.get("http://orders/")
        with meshlib.MeshClient(config=billing_cfg, timeout=10) as billing:
            no = billing.get("http://orders/")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{httpd.server_port}/", timeout=5)
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()
        identity.close()
        connect_identity(web_cfg).close()
        connect_identity(billing_cfg).close()
    assert ok.status_code == 200
    assert ok.text == "orders ok"
    assert no.status_code == 403
    assert calls == ["web"]
