"""TTL expiry and the critical-service reaper run on the injected clock, so tests never sleep."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[FakeConsul]:
    with FakeConsul(clock=clock) as fake:
        yield fake


def test_ttl_expires_on_tick_and_pass_resets_the_timer(server: FakeConsul, clock: Clock) -> None:
    server.register_service("web", ttl="10s", status="passing")
    clock.t += 9.9
    server.tick()
    assert server.check_status("service:web") == "passing"
    server.set_check_status("service:web", "passing", "still fine")  # restarts the 10 s
    clock.t += 9.9
    server.tick()
    assert server.check_status("service:web") == "passing"
    clock.t += 0.2
    server.tick()
    assert server.check_status("service:web") == "critical"
    check = httpx.get(server.url + "/v1/agent/checks").json()["service:web"]
    assert check["Output"] == "TTL expired (last output before timeout follows): still fine"


def test_expiry_without_prior_output_says_ttl_expired(server: FakeConsul, clock: Clock) -> None:
    server.register_check("heartbeat", ttl="5s", status="passing")
    clock.t += 5
    checks = httpx.get(server.url + "/v1/agent/checks").json()  # requests evaluate expiry too
    assert (checks["heartbeat"]["Status"], checks["heartbeat"]["Output"]) == (
        "critical",
        "TTL expired",
    )
    clock.t += 100
    server.tick()  # an expired TTL fires once, not again
    assert httpx.put(server.url + "/v1/agent/check/pass/heartbeat").status_code == 200
    assert server.check_status("heartbeat") == "passing"


def test_expiry_wakes_a_parked_health_query(server: FakeConsul, clock: Clock) -> None:
    server.register_service("web", ttl="10s", status="passing")
    index = httpx.get(server.url + "/v1/health/service/web").headers["X-Consul-Index"]
    got: dict[str, httpx.Response] = {}

    def park() -> None:
        params = {"index": index, "passing": "1", "wait": "5s"}
        got["r"] = httpx.get(server.url + "/v1/health/service/web", params=params, timeout=10)

    thread = threading.Thread(target=park)
    thread.start()
    server.wait_for_blocking_queries(1)
    clock.t += 11
    server.tick()
    thread.join(5)
    assert got["r"].json() == []
    assert int(got["r"].headers["X-Consul-Index"]) > int(index)


def test_deregister_critical_service_after_reaps_with_a_one_minute_floor(
    server: FakeConsul, clock: Clock
) -> None:
    check = {"TTL": "5s", "Status": "passing", "DeregisterCriticalServiceAfter": "30s"}
    server.register_service("web", checks=[check])
    clock.t += 6
    server.tick()
    assert server.check_status("service:web") == "critical"
    clock.t += 40  # past 30 s, but Consul never reaps sooner than a minute
    server.tick()
    assert httpx.get(server.url + "/v1/health/service/web").json() != []
    clock.t += 30
    server.tick()
    assert httpx.get(server.url + "/v1/health/service/web").json() == []


def test_clock_object_with_now_is_accepted() -> None:
    class Ticking:
        t = 0.0

        def now(self) -> float:
            return self.t

    clock = Ticking()
    with FakeConsul(clock=clock) as fake:
        fake.register_check("c", ttl=1.0, status="passing")
        clock.t = 2.0
        fake.tick()
        assert fake.check_status("c") == "critical"


def test_real_clock_timer_expires_without_tick() -> None:
    with FakeConsul() as fake:
        fake.register_service("web", ttl="100ms", status="passing")
        index = httpx.get(fake.url + "/v1/health/service/web").headers["X-Consul-Index"]
        params = {"index": index, "wait": "3s", "passing": "1"}
        r = httpx.get(fake.url + "/v1/health/service/web", params=params, timeout=10)
        assert r.json() == []
        assert fake.check_status("service:web") == "critical"
