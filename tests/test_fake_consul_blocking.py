"""Blocking queries behave like Consul's: per-service wake-ups, wait and jitter, index rules.

A parked query must return as soon as *its* data changes and not for anyone else's change; time
out with the same index otherwise; never report index 0; and return at once (with a lower
index) when the index goes backwards, as after a snapshot restore.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul
from meshlib.testing.fake_consul.dispatch import DEFAULT_WAIT, MAX_WAIT, parse_query_options
from meshlib.testing.fake_consul.wire import HTTPError, Request


@pytest.fixture
def server() -> Iterator[FakeConsul]:
    with FakeConsul() as fake:
        yield fake


@pytest.fixture
def http(server: FakeConsul) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def index_of(response: httpx.Response) -> int:
    return int(response.headers["X-Consul-Index"])


class Background:
    """Run one HTTP request on a thread so the test can act while it is parked."""

    def __init__(self, url: str, path: str, params: dict[str, str]) -> None:
        self.response: httpx.Response | None = None
        self.elapsed = 0.0

        def run() -> None:
            started = time.monotonic()
            self.response = httpx.get(url + path, params=params, timeout=10)
            self.elapsed = time.monotonic() - started

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(10)
        assert self.response is not None
        return self.response


def test_wakes_on_own_service_and_not_on_others(server: FakeConsul, http: httpx.Client) -> None:
    server.register_service("a", ttl="30s", status="passing")
    server.register_service("b", ttl="30s", status="passing")
    index = index_of(http.get("/v1/health/service/a"))
    parked = Background(server.url, "/v1/health/service/a", {"index": str(index), "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.register_service("b", service_id="b2")  # another service: must not wake "a"
    server.set_check_status("service:b", "critical")
    http.put("/v1/kv/some-key", content=b"x")
    time.sleep(0.05)
    assert server.active_blocking_queries == 1
    server.set_check_status("service:a", "warning")  # a's own check: wakes it
    response = parked.result()
    assert index_of(response) > index
    assert response.json()[0]["Checks"][1]["Status"] == "warning"
    assert parked.elapsed < 2


def test_node_check_wakes_every_service_on_the_node(server: FakeConsul, http: httpx.Client) -> None:
    server.register_service("a")
    index = index_of(http.get("/v1/health/service/a"))
    parked = Background(server.url, "/v1/health/service/a", {"index": str(index), "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.set_node_maintenance(True, "patching")
    response = parked.result()
    assert index_of(response) > index
    assert "_node_maintenance" in {c["CheckID"] for c in response.json()[0]["Checks"]}


def test_timeout_returns_same_index_after_wait(server: FakeConsul, http: httpx.Client) -> None:
    server.register_service("a")
    index = index_of(http.get("/v1/health/service/a"))
    started = time.monotonic()
    response = http.get("/v1/health/service/a", params={"index": str(index), "wait": "100ms"})
    elapsed = time.monotonic() - started
    assert index_of(response) == index
    assert 0.1 <= elapsed < 0.1 * 17 / 16 + 0.15


def test_jitter_comes_from_the_injected_rng() -> None:
    class MaxRandom(random.Random):
        def random(self) -> float:
            return 0.999

    with FakeConsul(rng=MaxRandom()) as server:
        index = server.index
        started = time.monotonic()
        httpx.get(
            server.url + "/v1/catalog/services", params={"index": str(index), "wait": "160ms"}
        )
        assert time.monotonic() - started >= 0.16 * (1 + 0.999 / 16)


def test_wait_defaults_and_limits() -> None:
    def opts(**query: str) -> tuple[int, float, str]:
        req = Request("GET", "/v1/kv/x", {k: [v] for k, v in query.items()}, {})
        o = parse_query_options(req)
        return o.index, o.wait, o.consistency

    assert opts(index="5") == (5, DEFAULT_WAIT, "leader")
    assert opts(index="5", wait="1m30s") == (5, 90.0, "leader")
    assert opts(index="5", wait="1h")[1] == MAX_WAIT
    assert opts(stale="")[2] == "stale"
    assert opts(consistent="1")[2] == "consistent"
    assert opts(max_stale="10s")[2] == "stale"
    bad_sets: list[dict[str, str]] = [
        {"wait": "10"},
        {"wait": "5 minutes"},
        {"index": "-1"},
        {"index": "1e3"},
        {"max_stale": "soon"},
        {"cached": "", "consistent": ""},
        {"max_stale": "5s", "consistent": ""},
    ]
    for bad in bad_sets:
        with pytest.raises(HTTPError):
            opts(**bad)


def test_index_is_never_zero(server: FakeConsul, http: httpx.Client) -> None:
    # An empty KV store has index 0 internally; the header says 1, as Consul's setIndex does.
    r = http.get("/v1/kv/missing")
    assert (r.status_code, r.headers["X-Consul-Index"]) == (404, "1")
    server.reset_index(0)
    assert http.get("/v1/health/service/nothing").headers["X-Consul-Index"] == "1"
    assert http.get("/v1/catalog/services").headers["X-Consul-Index"] == "1"


def test_unknown_service_is_empty_list_with_index(http: httpx.Client) -> None:
    for path in ("/v1/health/service/nope", "/v1/catalog/service/nope", "/v1/health/checks/nope"):
        r = http.get(path)
        assert (r.status_code, r.json()) == (200, [])
        assert int(r.headers["X-Consul-Index"]) >= 1


def test_service_appearing_and_disappearing_wakes_watchers(
    server: FakeConsul, http: httpx.Client
) -> None:
    index = index_of(http.get("/v1/health/service/late"))
    parked = Background(server.url, "/v1/health/service/late", {"index": str(index), "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.register_service("late")
    appeared = parked.result()
    assert [e["Service"]["ID"] for e in appeared.json()] == ["late"]
    index = index_of(appeared)
    parked = Background(server.url, "/v1/health/service/late", {"index": str(index), "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.deregister("late")
    gone = parked.result()
    assert gone.json() == []
    assert index_of(gone) > index


def test_identical_reregistration_changes_nothing(server: FakeConsul, http: httpx.Client) -> None:
    body = {"Name": "web", "Port": 80, "Check": {"TTL": "30s", "Status": "passing"}}
    http.put("/v1/agent/service/register", json=body)
    http.put("/v1/agent/check/pass/service:web")
    before = index_of(http.get("/v1/health/service/web"))
    http.put("/v1/agent/service/register", json=body)  # the heartbeat-style re-registration
    http.put("/v1/agent/check/pass/service:web")  # same status and output: no change
    assert index_of(http.get("/v1/health/service/web")) == before
    assert http.get("/v1/agent/checks").json()["service:web"]["Status"] == "passing"


def test_reset_index_goes_backwards_and_releases_parked_queries(
    server: FakeConsul, http: httpx.Client
) -> None:
    for i in range(5):
        server.register_service("a", service_id=f"a{i}")
    index = index_of(http.get("/v1/health/service/a"))
    assert index > 3
    parked = Background(server.url, "/v1/health/service/a", {"index": str(index), "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.reset_index(2)
    response = parked.result()
    assert parked.elapsed < 2
    assert index_of(response) == 2 < index
    assert len(response.json()) == 5
    server.register_service("a", service_id="a9")
    assert index_of(http.get("/v1/health/service/a")) == 3


def test_kv_blocking_on_missing_key_returns_when_created(
    server: FakeConsul, http: httpx.Client
) -> None:
    r = http.get("/v1/kv/cfg/x")
    parked = Background(server.url, "/v1/kv/cfg/x", {"index": r.headers["X-Consul-Index"]})
    server.wait_for_blocking_queries(1)
    server.kv_put("cfg/x", b"1")
    response = parked.result()
    assert response.status_code == 200
    assert response.json()[0]["Key"] == "cfg/x"


def test_agent_service_blocks_on_content_hash(server: FakeConsul, http: httpx.Client) -> None:
    server.register_service("web", port=80)
    first = http.get("/v1/agent/service/web")
    digest = first.headers["X-Consul-Contenthash"]
    assert first.json()["ContentHash"] == digest
    parked = Background(server.url, "/v1/agent/service/web", {"hash": digest, "wait": "5s"})
    server.wait_for_blocking_queries(1)
    server.register_service("web", port=81)
    response = parked.result()
    assert response.json()["Port"] == 81
    assert response.headers["X-Consul-Contenthash"] != digest


async def test_async_context_manager_with_httpx_async_client() -> None:
    async with FakeConsul() as server:
        server.register_service("web", port=80)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            first = await client.get("/v1/health/service/web")
            params = {"index": first.headers["X-Consul-Index"], "wait": "5s"}
            waiter = asyncio.ensure_future(client.get("/v1/health/service/web", params=params))
            await server.wait_for_blocking_queries_async(1)
            await client.put("/v1/agent/service/register", json={"Name": "web", "Port": 81})
            response = await waiter
            assert response.json()[0]["Service"]["Port"] == 81


async def test_a_thousand_idle_long_polls_wake_one_at_a_time() -> None:
    """The 1,000-watched-services case: parked queries cost futures, and wake individually."""
    count = 1000
    async with FakeConsul() as server:
        for i in range(count):
            server.register_service(f"svc{i}", ttl="30s", status="passing")
        index = server.index  # at least every service's own index

        async def watch(i: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            request = f"GET /v1/health/service/svc{i}?index={index}&wait=20s HTTP/1.1\r\n"
            writer.write((request + "Host: fake\r\n\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            await writer.wait_closed()
            return head

        tasks = [asyncio.ensure_future(watch(i)) for i in range(count)]
        await asyncio.to_thread(server.wait_for_blocking_queries, count, 20.0)
        server.set_check_status("service:svc7", "critical")
        done, pending = await asyncio.wait(tasks, timeout=2, return_when="FIRST_COMPLETED")
        assert done == {tasks[7]}
        assert tasks[7].result().startswith(b"HTTP/1.1 200 OK")
        await asyncio.sleep(0.05)
        assert server.active_blocking_queries == count - 1
        server.reset_index(1)  # a restore releases everyone at once
        heads = await asyncio.gather(*pending)
        assert all(h.startswith(b"HTTP/1.1 200 OK") for h in heads)
