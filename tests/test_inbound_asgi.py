"""Inbound admission end to end: uvicorn on 127.0.0.1 serving an app behind MeshASGIMiddleware.

The server runs on a thread of the test process so that the middleware's limits and a meshlib
client can share one manual clock: time only moves when a test (or the client's Retry-After
sleep) moves it, so nothing here sleeps for a rate interval or flakes on a slow machine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import meshlib
from _inbound_servers import asgi_server
from meshlib.clock import ManualClock
from meshlib.connect.server import Caller
from meshlib.limit import AdmissionPolicy


class App:
    """Counts the requests that reached it; ``/slow`` stays inside until ``release`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.inside = 0
        self.release = threading.Event()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["path"] == "/slow":
            self.inside += 1
            for _ in range(2000):  # at most 10 s
                if self.release.is_set():
                    break
                await asyncio.sleep(0.005)
            self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10)


async def _wait_for(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # at most 10 s
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 10 s")


async def test_rate_limit_admits_n_per_interval_and_refuses_the_rest_with_429() -> None:
    app, clock = App(), ManualClock()
    mw = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(rate=5, burst=5), clock=clock)
    with asgi_server(mw) as port:
        async with _client(port) as client:
            first = [await client.get("/") for _ in range(12)]
            clock.advance(1.0)
            second = [await client.get("/") for _ in range(7)]
    assert [r.status_code for r in first] == [200] * 5 + [429] * 7
    assert [r.status_code for r in second] == [200] * 5 + [429] * 2
    refused = first[-1]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-mesh-rejected"] == "rate"
    assert refused.text == "rate limit of 5 requests/s exceeded; retry later\n"
    assert app.calls == 10
    snap = mw.gate.admission.snapshot()
    assert snap["admitted"] == 10
    assert snap["rejected"] == {"rate": 9, "concurrency": 0}


async def test_concurrency_limit_answers_503_at_once_and_keeps_serving() -> None:
    app = App()
    policy = AdmissionPolicy(max_in_flight=3, retry_after=2)
    mw = meshlib.MeshASGIMiddleware(app, admission=policy, clock=ManualClock())
    with asgi_server(mw) as port:
        async with _client(port) as client:
            slow = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
            await _wait_for(lambda: app.inside == 2)
            # Two requests are parked in the application: the loop still serves a third.
            assert (await client.get("/fast")).status_code == 200
            slow.append(asyncio.create_task(client.get("/slow")))
            await _wait_for(lambda: app.inside == 3)
            started = time.perf_counter()
            refused = await client.get("/fast")
            elapsed = time.perf_counter() - started
            assert mw.gate.admission.in_flight == 3
            app.release.set()
            done = await asyncio.gather(*slow)
            after = await client.get("/fast")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["x-mesh-rejected"] == "concurrency"
    assert "3 requests in progress, the limit" in refused.text
    # No slot frees until the test releases the app after this answer: a refusal that waited
    # for one would take the app's whole 10 s bound, so anything well under that is at once.
    assert elapsed < 5.0
    assert [r.status_code for r in done] == [200, 200, 200]
    assert after.status_code == 200
    assert app.calls == 5
    assert mw.gate.admission.in_flight == 0


async def test_caller_header_keys_isolate_callers() -> None:
    app, clock = App(), ManualClock()
    policy = AdmissionPolicy(rate=1, burst=2, caller_header="x-mesh-caller")
    mw = meshlib.MeshASGIMiddleware(app, admission=policy, clock=clock)
    with asgi_server(mw) as port:
        async with _client(port) as client:

            async def three(caller: str | None) -> list[int]:
                headers = {"x-mesh-caller": caller} if caller else {}
                return [(await client.get("/", headers=headers)).status_code for _ in range(3)]

            a = await three("orders")
            b = await three("billing")
            anonymous = await three(None)
    assert a == b == anonymous == [200, 200, 429]
    assert app.calls == 6
    assert mw.gate.admission.snapshot()["callers"] == 3


async def test_verified_identity_wins_over_a_claimed_header_and_caller_key_is_a_hook() -> None:
    app, clock = App(), ManualClock()
    policy = AdmissionPolicy(rate=1, burst=1, caller_header="x-mesh-caller")
    inner = meshlib.MeshASGIMiddleware(app, admission=policy, clock=clock)

    async def connect_stand_in(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        # What ConnectASGIMiddleware does for a verified client certificate.
        peer = dict(scope["headers"]).get(b"x-test-peer", b"").decode()
        if peer:
            scope["meshlib.caller"] = Caller(f"spiffe://mesh.test/ns/default/svc/{peer}", None, "1")
        await inner(scope, receive, send)

    tenant = meshlib.MeshASGIMiddleware(
        app,
        admission=policy,
        clock=clock,
        caller_key=lambda headers, scope: headers.get("x-tenant"),
    )
    with asgi_server(connect_stand_in) as port, asgi_server(tenant) as tenant_port:
        async with _client(port) as client, _client(tenant_port) as tclient:

            async def get(peer: str, claimed: str) -> int:
                h = {"x-test-peer": peer, "x-mesh-caller": claimed}
                return (await client.get("/", headers=h)).status_code

            # A caller that rotates its claimed name gains nothing: it is keyed by its identity.
            spoof = [await get("web", "a"), await get("web", "b"), await get("web", "c")]
            other = await get("api", "a")
            tenants = [
                (await tclient.get("/", headers={"x-tenant": t})).status_code
                for t in ("t1", "t2", "t1")
            ]
    assert spoof == [200, 429, 429]
    assert other == 200
    assert tenants == [200, 200, 429]


async def test_expired_deadline_is_refused_before_the_app_runs(
    metric_reader: InMemoryMetricReader,
) -> None:
    app = App()
    mw = meshlib.MeshASGIMiddleware(app, config=meshlib.MeshConfig(), clock=ManualClock())
    with asgi_server(mw) as port:
        async with _client(port) as client:
            shed = await client.get("/", headers={"x-mesh-deadline-ms": "0"})
            fine = await client.get("/", headers={"x-mesh-deadline-ms": "500"})
    assert shed.status_code == 504
    assert shed.headers["x-mesh-rejected"] == "deadline"
    assert "retry-after" not in shed.headers
    assert "deadline had passed" in shed.text
    assert fine.status_code == 200
    assert app.calls == 1  # the shed request never reached the application
    assert mw.gate.admission.snapshot()["shed"] == {"deadline": 1}
    # With shedding only (no limit configured) admitted requests are not counted one by one.
    points = _admission_points(metric_reader)
    assert points == {("shed", "deadline"): 1}


async def test_min_deadline_sheds_and_shedding_can_be_turned_off() -> None:
    app = App()
    shedding = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(min_deadline=0.05))
    off = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(shed_expired=False))
    with asgi_server(shedding) as port, asgi_server(off) as off_port:
        async with _client(port) as client, _client(off_port) as off_client:
            short = await client.get("/", headers={"x-mesh-deadline-ms": "20"})
            long = await client.get("/", headers={"x-mesh-deadline-ms": "200"})
            kept = await off_client.get("/", headers={"x-mesh-deadline-ms": "0"})
    assert (short.status_code, long.status_code, kept.status_code) == (504, 200, 200)
    assert app.calls == 2


async def test_meshlib_client_retries_after_retry_after() -> None:
    app, clock = App(), ManualClock()
    mw = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(rate=1, burst=1), clock=clock)
    with asgi_server(mw) as port:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"inbound": [f"127.0.0.1:{port}"]}),
            clock=clock,
        ) as client:
            first = await client.get("http://inbound/")
            # The bucket is empty: the server answers 429 + Retry-After: 1, the client sleeps
            # that second on the shared clock (which refills the bucket) and tries again.
            second = await client.get("http://inbound/")
    assert (first.status_code, second.status_code) == (200, 200)
    assert max(clock.slept) >= 1.0
    assert app.calls == 2
    assert mw.gate.admission.snapshot()["rejected"]["rate"] == 1


async def test_meshlib_client_gives_up_when_retry_after_exceeds_its_deadline() -> None:
    app, clock = App(), ManualClock()
    policy = AdmissionPolicy(rate=0.1, burst=1)  # the next token is 10 s away
    mw = meshlib.MeshASGIMiddleware(app, admission=policy, clock=clock)
    with asgi_server(mw) as port:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"inbound": [f"127.0.0.1:{port}"]}),
            clock=clock,
            config=meshlib.MeshConfig(timeout=2.0),
        ) as client:
            await client.get("http://inbound/")
            refused = await client.get("http://inbound/")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert app.calls == 1
    assert not any(s >= 1.0 for s in clock.slept)  # it did not wait for a retry it cannot use


def _admission_points(reader: InMemoryMetricReader) -> dict[tuple[str, str | None], int]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[tuple[str, str | None], int] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "mesh.server.admission":
                    for p in m.data.data_points:
                        a = p.attributes or {}
                        key = (str(a["mesh.admission.outcome"]), a.get("mesh.admission.reason"))
                        out[(key[0], None if key[1] is None else str(key[1]))] = int(p.value)
    return out


async def test_admin_endpoint_shows_inbound_admission_beside_the_clients() -> None:
    from meshlib.admin import start_admin

    app, clock = App(), ManualClock()
    mw = meshlib.MeshASGIMiddleware(
        app, admission=AdmissionPolicy(rate=1, burst=1, max_in_flight=8), clock=clock
    )
    with asgi_server(mw) as port:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"inbound": [f"127.0.0.1:{port}"]}),
            config=meshlib.MeshConfig(retry=meshlib.RetryPolicy(max_attempts=1)),
            clock=clock,
        ) as client:
            codes = [(await client.get("http://inbound/")).status_code for _ in range(3)]
            async with await start_admin([client, mw], addr="127.0.0.1:0") as admin:
                async with httpx.AsyncClient(trust_env=False) as http:
                    state = (await http.get(f"{admin.url}/mesh/state")).json()
                    metrics = (await http.get(f"{admin.url}/mesh/metrics")).text
    assert codes == [200, 429, 429]
    mw_label = 'middleware="inbound"'
    assert f'meshlib_inbound_requests_total{{{mw_label},outcome="admitted",reason=""}} 1' in metrics
    rejected = f'meshlib_inbound_requests_total{{{mw_label},outcome="rejected",reason="rate"}} 2'
    assert rejected in metrics
    assert f"meshlib_inbound_limit{{{mw_label}}} 8" in metrics
    assert "inbound" in state["services"]  # the client's view is still there
    assert state["inbound"] == {
        "admitted": 1,
        "rejected": {"rate": 2, "concurrency": 0},
        "shed": {"deadline": 0},
        "in_flight": 0,
        "limit": 8,
        "rate": 1.0,
        "callers": 1,
    }


async def test_adaptive_limit_shrinks_when_the_app_is_slow_and_then_refuses_sooner() -> None:
    clock = ManualClock()
    inside = App()

    async def slow_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow-on-the-clock":
            clock.advance(0.3)  # three times the latency target, on the limits' clock
        await inside(scope, receive, send)

    policy = AdmissionPolicy(max_in_flight=4, adaptive=True, latency_target=0.1)
    mw = meshlib.MeshASGIMiddleware(slow_app, admission=policy, clock=clock)
    with asgi_server(mw) as port:
        async with _client(port) as client:
            assert mw.gate.admission.limit == 4
            for _ in range(20):
                assert (await client.get("/slow-on-the-clock")).status_code == 200
            shrunk = mw.gate.admission.limit
            held = asyncio.create_task(client.get("/slow"))
            await _wait_for(lambda: inside.inside == 1)
            refused = await client.get("/")
            inside.release.set()
            assert (await held).status_code == 200
    assert shrunk == 1  # 4 x 0.9^n, floored at min_in_flight
    assert refused.status_code == 503
    assert refused.headers["x-mesh-rejected"] == "concurrency"


async def test_a_refused_upload_is_not_read_and_the_connection_stays_usable() -> None:
    app, clock = App(), ManualClock()
    mw = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(rate=1, burst=1), clock=clock)
    with asgi_server(mw) as port:
        async with _client(port) as client:
            assert (await client.get("/")).status_code == 200
            refused = await client.post("/", content=b"x" * 1_000_000)
            clock.advance(1.0)
            after = await client.get("/")
    assert refused.status_code == 429
    assert after.status_code == 200
    assert app.calls == 2


async def test_in_flight_and_limit_gauges_follow_the_middleware(
    metric_reader: InMemoryMetricReader,
) -> None:
    import gc

    gc.collect()  # middlewares of earlier tests must not be counted
    app = App()
    mw = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(max_in_flight=3))
    with asgi_server(mw) as port:
        async with _client(port) as client:
            held = asyncio.create_task(client.get("/slow"))
            await _wait_for(lambda: app.inside == 1)
            during = _gauges(metric_reader)
            app.release.set()
            await held
            # The slot is freed when the app returns, just after the client has its response.
            await _wait_for(lambda: _gauges(metric_reader)["mesh.server.active_requests"] == 0)
            after = _gauges(metric_reader)
    assert during == {"mesh.server.active_requests": 1, "mesh.server.concurrency_limit": 3}
    assert after == {"mesh.server.active_requests": 0, "mesh.server.concurrency_limit": 3}


def _gauges(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    names = ("mesh.server.active_requests", "mesh.server.concurrency_limit")
    return {
        m.name: int(m.data.data_points[0].value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name in names
    }


async def test_meshlib_client_retries_a_503_after_its_retry_after() -> None:
    app = App()
    mw = meshlib.MeshASGIMiddleware(app, admission=AdmissionPolicy(max_in_flight=1))

    class FreesTheSlotWhileWaiting(ManualClock):
        """The client's clock: its Retry-After wait is where the busy request finishes."""

        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds)
            if seconds >= 1.0:
                app.release.set()
                await _wait_for(lambda: mw.gate.admission.in_flight == 0)

    clock = FreesTheSlotWhileWaiting()
    with asgi_server(mw) as port:
        async with (
            _client(port) as plain,
            meshlib.AsyncMeshClient(
                discovery=meshlib.StaticDiscovery({"inbound": [f"127.0.0.1:{port}"]}),
                clock=clock,
            ) as client,
        ):
            busy = asyncio.create_task(plain.get("/slow"))
            await _wait_for(lambda: app.inside == 1)
            response = await client.get("http://inbound/")
            assert (await busy).status_code == 200
    assert response.status_code == 200
    assert max(clock.slept) >= 1.0  # it waited the Retry-After the 503 carried
    assert mw.gate.admission.snapshot()["rejected"]["concurrency"] == 1
    assert app.calls == 2
