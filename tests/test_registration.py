"""Self-registration: announce, heartbeat, heal after the agent forgets, leave on exit/SIGTERM."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import consul
import pytest

import meshlib
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul


def _settings(c: FakeConsul) -> meshlib.ConsulSettings:
    return meshlib.ConsulSettings(host="127.0.0.1", port=c.port)


def _reg(**kw: object) -> meshlib.ServiceRegistration:
    base: dict[str, object] = {"name": "orders", "port": 9000, "address": "127.0.0.1", "ttl": 1.0}
    base.update(kw)
    return meshlib.ServiceRegistration(**base)  # type: ignore[arg-type]


def _services(c: FakeConsul) -> dict[str, dict[str, object]]:
    return consul.Consul(host="127.0.0.1", port=c.port).agent.services()  # type: ignore[no-any-return]


def test_sync_registrar_registers_heartbeats_and_deregisters(fake_consul: FakeConsul) -> None:
    reg = _reg(tags=("v2",), meta={"team": "core"}, weights=(10, 1))
    with meshlib.Registrar(reg, _settings(fake_consul)) as r:
        svc = _services(fake_consul)[reg.service_id]
        assert (svc["Service"], svc["Port"], svc["Tags"], svc["Meta"]) == (
            "orders",
            9000,
            ["v2"],
            {"team": "core"},
        )
        assert svc["Weights"] == {"Passing": 10, "Warning": 1}
        assert fake_consul.check_status(reg.check_id) == "passing"
        time.sleep(0.8)
        assert r.heartbeats >= 2
        fake_consul.tick()
        assert fake_consul.check_status(reg.check_id) == "passing"
    assert reg.service_id not in _services(fake_consul)


def test_registration_heals_after_the_agent_forgets(fake_consul: FakeConsul) -> None:
    reg = _reg()
    with meshlib.Registrar(reg, _settings(fake_consul)) as r:
        fake_consul.deregister(reg.service_id)
        assert reg.service_id not in _services(fake_consul)
        r.heartbeat()
        assert r.reregistrations == 1
        assert reg.service_id in _services(fake_consul)


def test_http_check_and_deregister_critical_after(fake_consul: FakeConsul) -> None:
    reg = _reg(check="http", http_url="http://127.0.0.1:9000/health", deregister_after=90.0)
    assert reg.check_definition() == {
        "HTTP": "http://127.0.0.1:9000/health",
        "Interval": "10s",
        "DeregisterCriticalServiceAfter": "90s",
    }
    with meshlib.Registrar(reg, _settings(fake_consul)):
        checks = consul.Consul(host="127.0.0.1", port=fake_consul.port).agent.checks()
        assert checks[reg.check_id]["ServiceID"] == reg.service_id


async def test_async_registrar_and_discovery_see_each_other(fake_consul: FakeConsul) -> None:
    reg = _reg(name="billing")
    async with meshlib.AsyncRegistrar(reg, _settings(fake_consul)) as r:
        d = meshlib.ConsulDiscovery(_settings(fake_consul))
        res = await d.resolve(Target("billing"))
        assert res is not None
        assert [e.port for e in res.endpoints] == [9000]
        await asyncio.sleep(0.5)
        assert r.heartbeats >= 1
        d.close()
    assert reg.service_id not in _services(fake_consul)


async def test_consul_lifespan_for_asgi_apps(fake_consul: FakeConsul) -> None:
    reg = _reg(name="web")
    lifespan = meshlib.consul_lifespan(reg, _settings(fake_consul))
    async with lifespan(object()):
        assert reg.service_id in _services(fake_consul)
    assert reg.service_id not in _services(fake_consul)


def test_registrar_from_environment(
    fake_consul: FakeConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", fake_consul.http_addr)
    monkeypatch.setenv("MESH_DISCOVERY", "static")
    monkeypatch.setenv("MESH_SERVICE_NAME", "inventory")
    monkeypatch.setenv("MESH_SERVICE_PORT", "7000")
    with meshlib.Registrar():
        assert "inventory-local-7000" in _services(fake_consul)
    monkeypatch.delenv("MESH_SERVICE_NAME")
    with pytest.raises(meshlib.ConfigError, match="MESH_SERVICE_NAME"):
        meshlib.Registrar()


def test_sigterm_deregisters(fake_consul: FakeConsul, tmp_path: Path) -> None:
    script = tmp_path / "svc.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time, meshlib
            reg = meshlib.ServiceRegistration(name="term", port=9100, ttl=5.0)
            settings = meshlib.ConsulSettings(host="127.0.0.1", port={fake_consul.port})
            with meshlib.Registrar(reg, settings):
                print("READY", flush=True)
                time.sleep(30)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"READY"
        assert "term-local-9100" in _services(fake_consul)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "term-local-9100" not in _services(fake_consul)


def test_pyconsul_registered_upstreams_are_discovered(fake_consul: FakeConsul) -> None:
    agent = consul.Consul(host="127.0.0.1", port=fake_consul.port).agent
    agent.service.register("pay", service_id="pay-1", address="127.0.0.1", port=9201)
    agent.service.register("pay", service_id="pay-2", address="127.0.0.1", port=9202)
    d = meshlib.ConsulDiscovery(_settings(fake_consul))
    res = d.resolve_sync(Target("pay"))
    assert res is not None
    assert sorted(e.port for e in res.endpoints) == [9201, 9202]
    d.close()


def test_sigterm_handler_survives_registrars_leaving_out_of_order(fake_consul: FakeConsul) -> None:
    before = signal.getsignal(signal.SIGTERM)
    a = meshlib.Registrar(_reg(name="a", port=9001), _settings(fake_consul))
    b = meshlib.Registrar(_reg(name="b", port=9002), _settings(fake_consul))
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGTERM) not in (before, signal.SIG_DFL)
    b.__exit__(None, None, None)
    assert signal.getsignal(signal.SIGTERM) == before
