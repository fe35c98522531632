"""The command line: help, one-line errors, config masking, status and check."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import meshlib
from meshlib.admin import AdminServer
from meshlib.cli import main
from meshlib.testing import FakeConsul
from meshlib.upstream import UpstreamBehaviour, UpstreamThread

TOKEN = "tok-7f3a9c-admin"
CONSUL_TOKEN = "consul-acl-0d1e2f"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without MESH_* or CONSUL_* variables."""
    for name in list(os.environ):
        if name.startswith(("MESH_", "CONSUL_")):
            monkeypatch.delenv(name)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(upstream_threads: list[UpstreamThread]) -> Iterator[tuple[meshlib.MeshClient, str]]:
    """A sync client with some traffic, one endpoint failing, and its admin endpoint."""
    upstream_threads[2].set_behaviour(UpstreamBehaviour(name="c", fail_fraction=1.0))
    discovery = meshlib.StaticDiscovery(
        {"users": [f"127.0.0.1:{s.port}" for s in upstream_threads]}
    )
    config = meshlib.MeshConfig(balancer="round-robin")
    with meshlib.MeshClient(discovery=discovery, config=config) as client:
        for _ in range(40):
            client.get("http://users/")
        with AdminServer(client, addr=":0", token=TOKEN) as admin:
            yield client, admin.url


def test_help_via_python_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "meshlib", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for command in ("demo", "resolve", "config", "check", "status"):
        assert command in proc.stdout


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "resolve", "config", "check", "status"):
        assert main([command, "--help"]) == 0
        assert "usage: meshlib" in capsys.readouterr().out


def test_bad_input_is_one_line_and_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["bogus"], [], ["status"], ["demo", "--rate", "fast"], ["check", "--timeout"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("meshlib")


def test_bad_configuration_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_BALANCER", "fastest")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "MESH_BALANCER" in err


def test_resolve_still_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_STATIC_ENDPOINTS", "users=127.0.0.1:8001,127.0.0.1:8002")
    assert main(["resolve", "users"]) == 0
    out = capsys.readouterr().out
    assert "2 endpoint(s)" in out
    assert "127.0.0.1:8002" in out
    assert main(["resolve", "orders"]) == 1


def test_config_masks_secrets_and_shows_sources(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_ADMIN_ADDR", "127.0.0.1:9990")
    monkeypatch.setenv("MESH_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("MESH_BALANCER", "round-robin")
    monkeypatch.setenv("MESH_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:8501")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", CONSUL_TOKEN)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    assert CONSUL_TOKEN not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "<set>" in lines["MESH_ADMIN_TOKEN"]
    assert lines["MESH_ADMIN_TOKEN"].endswith("(environment)")
    assert lines["MESH_ADMIN_ADDR"].endswith("(environment)")
    assert "round-robin" in lines["MESH_BALANCER"]
    assert lines["MESH_BALANCER"].endswith("(environment)")
    assert lines["MESH_ENGINE"].endswith("(default)")
    assert "max_attempts=2" in lines["MESH_MAX_ATTEMPTS,"]
    assert lines["MESH_MAX_ATTEMPTS,"].endswith("(environment)")
    assert lines["MESH_DISCOVERY"].endswith("(environment)")  # consul, from CONSUL_HTTP_ADDR
    # The Consul settings come from ConsulSettings.describe(): the token only as "set".
    assert "Consul (CONSUL_*):" in out
    assert "<set from CONSUL_HTTP_TOKEN>" in out
    assert "http://127.0.0.1:8501" in out


def test_status_prints_the_table(
    served: tuple[meshlib.MeshClient, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, url = served
    assert main(["status", url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for column in ("SERVICE", "ENDPOINT", "STATE", "IN-FLIGHT", "EWMA MS", "P50 MS", "P99 MS"):
        assert column in header
    assert "SUCCESS" in header
    assert "NEXT PROBE" in header
    endpoints = client.mesh_state()["services"]["users"]["endpoints"]
    rows = [line for line in out.splitlines() if line.startswith("users ")]
    assert len(rows) == 3
    for ep in endpoints:
        assert any(ep["address"] in row and ep["state"] in row for row in rows)
    dead = next(row for row in rows if " dead " in row)
    assert dead.rstrip().endswith("s")  # the time to the next probe
    assert "users: budget balance" in out
    assert "discovery fresh" in out
    assert TOKEN not in out


def test_status_reads_the_token_from_the_environment_and_prints_json(
    served: tuple[meshlib.MeshClient, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = served
    monkeypatch.setenv("MESH_ADMIN_TOKEN", TOKEN)
    port = url.rsplit(":", 1)[1]
    assert main(["status", f":{port}", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"services"' in out
    assert '"users"' in out


def test_status_without_the_token_says_so(
    served: tuple[meshlib.MeshClient, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = served
    assert main(["status", url]) == 1
    err = capsys.readouterr().err
    assert "401" in err
    assert "MESH_ADMIN_TOKEN" in err
    assert main(["status", url, "--token", "wrong-token"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err
    assert "wrong-token" not in err


def test_status_unreachable_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", f"http://127.0.0.1:{_closed_port()}", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the admin endpoint" in err
    assert len(err.strip().splitlines()) == 1


def test_check_passes_against_consul(
    fake_consul_env: FakeConsul, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "OK    configuration" in out
    assert f"OK    consul: http://{fake_consul_env.http_addr} answers, leader" in out
    assert "FAIL" not in out


def test_check_fails_when_consul_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", CONSUL_TOKEN)
    assert main(["check", "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  consul:" in out
    assert CONSUL_TOKEN not in out


def test_check_reports_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESH_TIMEOUT", "soon")
    assert main(["check"]) == 1
    assert "FAIL  configuration: MESH_TIMEOUT" in capsys.readouterr().out
    monkeypatch.delenv("MESH_TIMEOUT")
    monkeypatch.setenv("MESH_ADMIN_ADDR", "0.0.0.0:9990")
    monkeypatch.setenv("MESH_STATIC_ENDPOINTS", "users=127.0.0.1:8001")
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "OK    static discovery (MESH_STATIC_ENDPOINTS): 1 service(s): users" in out
    assert "FAIL  admin: MESH_ADMIN_ADDR" in out


def test_bench_lists_the_scenarios(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capfd.readouterr().out
    assert "cpu" in out
    assert "slow-replica" in out


def test_resolve_asks_consul_prints_instances_and_closes(
    fake_consul_env: FakeConsul,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    fake_consul_env.register_service("users", service_id="u0", address="127.0.0.1", port=8001)
    fake_consul_env.register_service(
        "users", service_id="u1", address="127.0.0.1", port=8002, tags=["v2"]
    )
    monkeypatch.setenv("MESH_DISCOVERY", "consul")
    # Watch threads another test left behind are not this command's.
    before = {t for t in threading.enumerate() if t.name == "meshlib-consul-watch"}
    assert main(["resolve", "users"]) == 0
    out = capsys.readouterr().out
    assert "2 endpoint(s)" in out
    assert "127.0.0.1:8001" in out
    assert "127.0.0.1:8002" in out
    assert "tags=v2" in out
    assert not [
        t for t in threading.enumerate() if t.name == "meshlib-consul-watch" and t not in before
    ]
    # A service with no passing instance is an error (exit 1), said on one line.
    assert main(["resolve", "orders"]) == 1
    err = capsys.readouterr().err
    assert "no instance to route to" in err
    assert len(err.strip().splitlines()) == 1


def test_resolve_with_consul_down_fails_within_its_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", CONSUL_TOKEN)
    started = time.monotonic()
    assert main(["resolve", "users", "--timeout", "1"]) == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "Consul at" in err
    assert CONSUL_TOKEN not in err
    assert len(err.strip().splitlines()) == 1


def test_check_warns_when_the_consul_address_has_no_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 127.0.0.2 without a port means port 80 (Go's rule); nothing listens there in the test.
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.2")
    monkeypatch.setenv("MESH_DISCOVERY", "consul")
    main(["check", "--timeout", "1"])
    out = capsys.readouterr().out
    assert "WARN  consul: CONSUL_HTTP_ADDR has no port, so http://127.0.0.2:80 is used" in out
    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.2:{_closed_port()}")
    main(["check", "--timeout", "1"])
    assert "WARN" not in capsys.readouterr().out
