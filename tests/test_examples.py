"""The examples under examples/ run and show what their READMEs say they show.

* fastapi_flask_consul: ``main()`` runs for real (FakeConsul process, two Flask catalogs, a
  FastAPI frontend) and its report is checked: registrations, balancing, the watch dropping a
  deregistered instance, a clean Consul at the end;
* failing_dependency: the walkthrough runs in-process and each scene's findings are checked,
  and so is its 20-second bound;
* testing_your_service: its test file is run with pytest in a subprocess and must pass;
* connect_intentions: runs in-process (FakeConsul's CA, uvicorn over Connect mTLS) and
  its three calls are checked: allowed, denied by intention, plaintext refused;
* docker-compose: not run (no Docker engine here); the compose file must parse, every file it
  and its Dockerfile reference must exist, and each service's environment must be a valid
  meshlib configuration for ``serve.py``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import meshlib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT))

from examples.failing_dependency import walkthrough  # noqa: E402
from examples.fastapi_flask_consul import run as consul_example  # noqa: E402


def _clean_env() -> dict[str, str]:
    """This environment without MESH_*/CONSUL_* settings that would redirect an example."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "CONSUL_"))}


# -- fastapi_flask_consul ---------------------------------------------------------------------


def test_fastapi_flask_consul_registers_balances_and_follows_consul(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = consul_example.main([])
    out = capsys.readouterr().out

    instances = set(consul_example.CATALOG_INSTANCES)
    start = report.consul_at_start
    assert {i["id"] for i in start["catalog"]} == instances
    assert [i["checks"] for i in start["catalog"]] == ["passing", "passing"]
    assert [i["id"] for i in start["frontend"]] == [f"frontend-127.0.0.1-{_port(start)}"]
    assert len(report.sequential) == 6
    assert set(report.sequential) <= instances
    assert sum(report.burst.values()) == 40
    assert set(report.sequential) | set(report.burst) == instances  # both instances served
    assert {ep["state"] for ep in report.mesh_endpoints} == {"alive"}
    assert report.endpoints_after_deregister == 1
    assert report.after_deregister == {"catalog-1": 10}
    assert report.consul_at_end == {}  # everyone deregistered on the way out
    assert "FakeConsul stopped." in out
    assert "x-mesh-deadline-ms: " in out


def _port(view: dict[str, list[dict[str, Any]]]) -> str:
    return str(view["frontend"][0]["address"]).rpartition(":")[2]


def test_fastapi_flask_consul_runs_as_a_script() -> None:
    # run.py imports its sibling module differently as a script; --help exercises that path.
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "fastapi_flask_consul" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--consul" in proc.stdout


# -- failing_dependency -----------------------------------------------------------------------


async def test_failing_dependency_walkthrough_shows_each_behaviour() -> None:
    out = io.StringIO()
    start = time.monotonic()
    found = await walkthrough.walkthrough(out)
    elapsed = time.monotonic() - start
    text = out.getvalue()

    assert elapsed < 20.0
    accrual = found.accrual
    assert accrual["caller_errors"] == 0
    assert accrual["dead_after_failures"] == "dead"
    assert accrual["requests_while_dead"] == 0
    assert accrual["final_state"] == "alive"
    events = " | ".join(accrual["events"])
    for word in ("ejected", "probing", "probe failed; ejected again", "revived"):
        assert word in events

    hang = found.hang
    assert hang["served"] == ["ok", "ok"]
    assert hang["slowest_get_s"] < 1.0
    assert hang["post_error"] == "ReadTimeout"
    assert hang["post_sent"] == 1

    reset = found.reset
    assert reset["get_statuses"] == [200, 200]
    assert reset["get_served_by"] == ["ok", "ok"]
    assert reset["get_attempts_reset"] >= 1
    assert reset["post_errors"]  # at least one POST met the reset...
    assert reset["posts_received_by_big"] == len(reset["post_errors"])  # ...and was sent once

    retry_after = found.retry_after
    assert retry_after["status"] == 200
    assert retry_after["attempts"] == 2
    assert 1.0 <= retry_after["waited_s"] < 2.0
    assert retry_after["capped_status"] == 503
    assert retry_after["capped_attempts"] == 1
    assert retry_after["capped_s"] < 0.4

    budget = found.budget
    floor = 5  # min_per_sec 0.5 x ttl 10
    assert budget["calls"] <= budget["sent"] <= budget["calls"] * 1.2 + floor
    assert budget["budget"]["exhausted"] > 0

    deadline = found.deadline
    assert deadline["error"] == "DeadlineExceeded"
    assert deadline["completed_calls"] == 1
    assert 0 < deadline["first_deadline_ms"] <= 500
    assert 0.45 <= deadline["took_s"] < 0.9

    for n in range(1, 7):
        assert f"=== {n}. " in text
    assert "mesh_state():" in text


# -- testing_your_service ---------------------------------------------------------------------


def test_testing_your_service_example_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/testing_your_service", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,  # below pytest-timeout (120 s): a hang fails here, naming the command
        env=_clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b4 passed\b", proc.stdout), proc.stdout[-2000:]


# -- docker-compose ---------------------------------------------------------------------------

COMPOSE_DIR = EXAMPLES / "docker-compose"


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith(("[", '"')):
        return json.loads(text)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def parse_yaml_subset(text: str) -> Any:
    """The YAML subset docker-compose.yml keeps to, for machines without PyYAML: block mappings,
    block sequences of scalars, double-quoted strings, flow sequences of double-quoted strings,
    integers, plain strings and whole-line comments. Anything else fails loudly."""
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    pos = 0

    def block(indent: int) -> Any:
        nonlocal pos
        if lines[pos][1].startswith("- "):
            items = []
            while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
                items.append(_scalar(lines[pos][1][2:]))
                pos += 1
            return items
        mapping: dict[str, Any] = {}
        while pos < len(lines) and lines[pos][0] == indent:
            key, colon, rest = lines[pos][1].partition(":")
            assert colon, lines[pos]
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", key), lines[pos]
            pos += 1
            if rest.strip():
                mapping[key] = _scalar(rest)
            elif pos < len(lines) and lines[pos][0] > indent:
                mapping[key] = block(lines[pos][0])
            else:
                mapping[key] = None
        return mapping

    parsed = block(0)
    assert pos == len(lines), f"not in the subset: {lines[pos]}"
    return parsed


def _compose() -> dict[str, Any]:
    text = (COMPOSE_DIR / "docker-compose.yml").read_text()
    parsed: dict[str, Any] = parse_yaml_subset(text)
    try:
        import yaml
    except ImportError:
        return parsed
    full: dict[str, Any] = yaml.safe_load(text)
    assert full == parsed  # the subset parser reads the file exactly as YAML does
    return full


def _load_serve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_serve", COMPOSE_DIR / "serve.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docker_compose_file_parses_and_references_existing_files() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"consul", "catalog-1", "catalog-2", "frontend"}
    assert services["consul"]["image"].startswith("hashicorp/consul:")
    assert "-dev" in services["consul"]["command"]

    dockerfiles = set()
    for name in ("catalog-1", "catalog-2", "frontend"):
        build = services[name]["build"]
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == ROOT
        dockerfiles.add(context / build["dockerfile"])
        assert services[name]["depends_on"]["consul"]["condition"] == "service_healthy"
    (dockerfile,) = dockerfiles
    assert dockerfile.is_file()

    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    copies = [
        line.split()[1:-1]
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY")
    ]
    sources = [src for srcs in copies for src in srcs]
    assert "src" in sources
    assert "pyproject.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"{src} is excluded from the context"
    entry = re.search(r'ENTRYPOINT \["python", "/src/([^"]+)"\]', dockerfile.read_text())
    assert entry is not None
    assert (ROOT / entry.group(1)).is_file()

    readme = (COMPOSE_DIR / "README.md").read_text()
    assert "Not run in CI" in readme


def test_docker_compose_environments_are_valid_meshlib_configurations() -> None:
    services = _compose()["services"]
    serve = _load_serve()
    ids = set()
    for name in ("catalog-1", "catalog-2", "frontend"):
        svc = services[name]
        env = {k: str(v) for k, v in svc["environment"].items()}
        (role,) = svc["command"]
        config, app = serve.build(role, env)
        assert isinstance(config, meshlib.MeshConfig)
        assert config.discovery == "consul"
        assert (config.consul.host, config.consul.port) == ("consul", 8500)
        reg = config.registration
        assert reg is not None
        assert reg.address == name  # the compose host name, resolvable on the compose network
        ids.add(reg.service_id)
        assert app is not None
        for mapping in svc.get("ports", []):
            assert mapping.rpartition(":")[2] == str(reg.port)  # published port = served port
    assert ids == {"catalog-1", "catalog-2", "frontend-frontend-8080"}


# -- connect_intentions -------------------------------------------------------------------------


def test_connect_intentions_allows_denies_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    from examples.connect_intentions import run as connect_example

    report = connect_example.main([])
    out = capsys.readouterr().out
    assert report.allowed == (200, "hello web")
    assert report.denied[0] == 403
    assert "svc/billing may not call 'api'" in report.denied[1]
    assert "Action: DENY" in report.denied[1]
    assert report.plaintext_refused
    assert report.api_calls == 1
    assert "web     -> api: 200 hello web" in out
