"""Fault injection: error answers, hangs, dropped connections, outages on the same port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import consul
import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul


@pytest.fixture
def server() -> Iterator[FakeConsul]:
    with FakeConsul() as fake:
        fake.register_service("web", port=80)
        yield fake


def test_fail_next_answers_n_requests_with_the_status(server: FakeConsul) -> None:
    server.fail_next(2, status=503, body="No cluster leader")
    with httpx.Client(base_url=server.url) as http:
        first, second, third = (http.get("/v1/health/service/web") for _ in range(3))
    assert (first.status_code, first.text) == (503, "No cluster leader")
    assert second.status_code == 503
    assert third.status_code == 200
    assert first.headers["X-Consul-Default-ACL-Policy"] == "allow"


def test_fail_next_surfaces_in_py_consul(
    server: FakeConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    c = consul.Consul(host="127.0.0.1", port=server.port)
    server.fail_next()
    with pytest.raises(consul.ConsulException, match="500"):
        c.health.service("web")
    assert c.health.service("web")[1][0]["Service"]["ID"] == "web"


def test_hang_accepts_but_never_answers_until_released(server: FakeConsul) -> None:
    server.hang(True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/v1/status/leader", timeout=0.15)
    held: dict[str, httpx.Response] = {}

    def call() -> None:
        held["r"] = httpx.get(server.url + "/v1/status/leader", timeout=5)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.05)
    assert "r" not in held
    server.hang(False)
    thread.join(5)
    assert held["r"].status_code == 200
    assert httpx.get(server.url + "/v1/status/leader").status_code == 200


def test_latency_delays_answers(server: FakeConsul) -> None:
    server.set_latency(0.1)
    started = time.monotonic()
    assert httpx.get(server.url + "/v1/status/leader").status_code == 200
    assert time.monotonic() - started >= 0.1
    server.set_latency(0)


def test_down_refuses_connections_and_up_listens_on_same_port(server: FakeConsul) -> None:
    port = server.port
    with httpx.Client(base_url=server.url) as http:
        index = http.get("/v1/health/service/web").headers["X-Consul-Index"]
        errors: list[Exception] = []

        def park() -> None:
            try:
                httpx.get(server.url + "/v1/health/service/web", params={"index": index}, timeout=5)
            except httpx.TransportError as exc:
                errors.append(exc)

        thread = threading.Thread(target=park)
        thread.start()
        server.wait_for_blocking_queries(1)
        server.down()
        thread.join(5)
        assert errors, "a parked query must see its connection drop"
        assert not server.is_up
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/v1/status/leader")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        server.up()
        assert server.port == port
        r = http.get("/v1/health/service/web")  # the pooled connection is dead; httpx reconnects
        assert r.status_code == 200
        assert r.headers["X-Consul-Index"] == index  # state survives an outage


def test_drop_connections_resets_open_connections(server: FakeConsul) -> None:
    index = httpx.get(server.url + "/v1/health/service/web").headers["X-Consul-Index"]
    errors: list[Exception] = []

    def park() -> None:
        try:
            httpx.get(server.url + "/v1/health/service/web", params={"index": index}, timeout=5)
        except httpx.TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=park)
    thread.start()
    server.wait_for_blocking_queries(1)
    server.drop_connections()
    thread.join(5)
    assert errors
    assert server.active_blocking_queries == 0
    assert httpx.get(server.url + "/v1/status/leader").status_code == 200  # still listening


def test_requests_are_recorded(server: FakeConsul) -> None:
    server.clear_requests()
    httpx.get(server.url + "/v1/health/service/web", params={"stale": "", "index": "1"})
    (recorded,) = server.requests
    assert (recorded.method, recorded.path) == ("GET", "/v1/health/service/web")
    assert recorded.query == {"stale": [""], "index": ["1"]}


def test_control_methods_need_a_running_server() -> None:
    fake = FakeConsul()
    with pytest.raises(RuntimeError, match="not running"):
        fake.down()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = fake.port
    fake.register_service("early")  # state can be arranged before start()
    with fake, httpx.Client(base_url=fake.url) as http:
        assert [e["Service"]["ID"] for e in http.get("/v1/health/service/early").json()] == [
            "early"
        ]
    fake.stop()  # idempotent
