"""The agent runs its HTTP and TCP checks, with Consul's status mapping and output texts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul


@pytest.fixture
def server() -> Iterator[FakeConsul]:
    with FakeConsul() as fake:
        yield fake


def settled(server: FakeConsul, check_id: str, status: str) -> dict[str, str]:
    """Follow /v1/health/state/any with blocking queries until the check has ``status``."""
    index = "1"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = httpx.get(
            server.url + "/v1/health/state/any", params={"index": index, "wait": "1s"}, timeout=5
        )
        index = r.headers["X-Consul-Index"]
        for check in r.json():
            if check["CheckID"] == check_id and check["Status"] == status:
                result: dict[str, str] = check
                return result
    raise AssertionError(f"{check_id} never became {status}")


def test_http_check_passes_against_a_live_endpoint(server: FakeConsul) -> None:
    url = server.url + "/v1/status/leader"
    check = {"HTTP": url, "Interval": "10s"}
    server.register_service("web", port=80, checks=[check])
    got = settled(server, "service:web", "passing")
    assert got["Output"] == f'HTTP GET {url}: 200 OK Output: "127.0.0.1:8300"'
    assert got["Type"] == "http"
    entries = httpx.get(server.url + "/v1/health/service/web?passing").json()
    assert [e["Service"]["ID"] for e in entries] == ["web"]


def test_http_check_maps_429_to_warning_and_errors_to_critical(server: FakeConsul) -> None:
    with FakeConsul(run_checks=False) as other:
        other.fail_next(1000, status=429, body="slow down")
        body = {"Name": "busy", "HTTP": other.url + "/v1/status/leader", "Interval": "10s"}
        assert httpx.put(server.url + "/v1/agent/check/register", json=body).status_code == 200
        got = settled(server, "busy", "warning")
        assert got["Output"].endswith(": 429 Too Many Requests Output: slow down")
    refused = {"Name": "down", "HTTP": "http://127.0.0.1:1/health", "Interval": "10s"}
    assert httpx.put(server.url + "/v1/agent/check/register", json=refused).status_code == 200
    got = settled(server, "down", "critical")
    assert got["Output"] == (
        'Get "http://127.0.0.1:1/health": dial tcp 127.0.0.1:1: connect: connection refused'
    )


def test_tcp_check(server: FakeConsul) -> None:
    body = {"Name": "port", "TCP": f"127.0.0.1:{server.port}", "Interval": "10s"}
    assert httpx.put(server.url + "/v1/agent/check/register", json=body).status_code == 200
    got = settled(server, "port", "passing")
    assert got["Output"] == f"TCP connect 127.0.0.1:{server.port}: Success"


def test_checks_can_be_left_to_the_test() -> None:
    with FakeConsul(run_checks=False) as fake:
        check = {"HTTP": fake.url + "/v1/status/leader", "Interval": "1s"}
        fake.register_service("web", checks=[check])
        time.sleep(0.05)
        assert fake.check_status("service:web") == "critical"
        fake.set_check_status("service:web", "passing")
        assert fake.check_status("service:web") == "passing"
