"""Consul's own requests never appear in users' traces, under httpx auto-instrumentation too.

The watch of a service starts when a user's request first touches it; it must not inherit that
request's context (its long polls would become that request's children, arriving long after it
ended), and its requests, like registration's, are kept out of tracing altogether.
"""

import asyncio
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


@pytest.fixture
def instrumented(spans: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument()
    try:
        yield spans
    finally:
        instrumentor.uninstrument()


def _to_consul(spans: InMemorySpanExporter, consul: FakeConsul) -> list[ReadableSpan]:
    port = consul.port
    found = []
    for s in spans.get_finished_spans():
        attrs = dict(s.attributes or {})
        url = str(attrs.get("url.full") or attrs.get("http.url") or "")
        if s.kind is SpanKind.CLIENT and f":{port}/" in url:
            found.append(s)
    return found


def _settings(c: FakeConsul) -> meshlib.ConsulSettings:
    return meshlib.ConsulSettings(host="127.0.0.1", port=c.port)


async def _until(cond, limit: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


async def test_watch_long_polls_are_not_children_of_the_first_request(
    instrumented: InMemorySpanExporter, fake_consul: FakeConsul
) -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a")) as a,
        Upstream(UpstreamBehaviour(name="b")) as b,
    ):
        fake_consul.register_service("users", service_id="u0", address="127.0.0.1", port=a.port)
        discovery = meshlib.ConsulDiscovery(_settings(fake_consul))
        async with meshlib.AsyncMeshClient(discovery=discovery) as client:
            with trace.get_tracer("test").start_as_current_span("handler") as root:
                assert (await client.get("http://users/")).status_code == 200
            # Wake the parked blocking query twice after the request ended.
            for i, port in enumerate((b.port, a.port + 0)):
                fake_consul.register_service(
                    "users", service_id=f"x{i}", address="127.0.0.1", port=port, tags=[str(i)]
                )
                await _until(
                    lambda n=i: len(discovery.lookup(Target("users")).endpoints) == n + 2  # type: ignore[union-attr]
                )
        discovery.close()
    trace_id = root.get_span_context().trace_id
    polls = _to_consul(instrumented, fake_consul)
    assert len([s for s in polls if s.context.trace_id == trace_id]) <= 1
    assert [s for s in polls if s.context.trace_id != trace_id] == []
    mine = [s for s in instrumented.get_finished_spans() if s.context.trace_id == trace_id]
    assert sorted(s.name for s in mine) == ["GET", "handler", "mesh users"]


def test_sync_first_use_and_registration_stay_out_of_traces(
    instrumented: InMemorySpanExporter, fake_consul: FakeConsul
) -> None:
    reg = meshlib.ServiceRegistration(name="orders", port=9000, address="127.0.0.1", ttl=1.0)
    with UpstreamThread(UpstreamBehaviour(name="a")) as a:
        fake_consul.register_service("users", service_id="u0", address="127.0.0.1", port=a.port)
        discovery = meshlib.ConsulDiscovery(_settings(fake_consul))
        with trace.get_tracer("test").start_as_current_span("handler") as root:
            with meshlib.Registrar(reg, _settings(fake_consul)) as registrar:
                with meshlib.MeshClient(discovery=discovery) as client:
                    assert client.get("http://users/").status_code == 200
                deadline = time.monotonic() + 5.0
                while registrar.heartbeats < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        discovery.close()
    trace_id = root.get_span_context().trace_id
    to_consul = _to_consul(instrumented, fake_consul)
    assert len([s for s in to_consul if s.context.trace_id == trace_id]) <= 1
    assert [s for s in to_consul if s.context.trace_id != trace_id] == []


async def test_connect_certificate_watches_and_intention_checks_stay_out_of_traces(
    instrumented: InMemorySpanExporter, fake_consul: FakeConsul
) -> None:
    from meshlib.identity import ConnectIdentity

    identity = ConnectIdentity("users", _settings(fake_consul), authz_ttl=0.05)
    try:
        with trace.get_tracer("test").start_as_current_span("handler") as root:
            identity.wait()
            server = identity.server()
            for i in range(3):  # cache misses: each asks the agent's authorize endpoint
                caller = f"spiffe://{fake_consul.trust_domain}/ns/default/dc/dc1/svc/web{i}"
                assert server.authorizer.check(caller).allowed
        fake_consul.reissue_leaf("users")  # wakes the parked leaf watch after the span ended
        await _until(lambda: identity.watcher.rotations >= 1)
    finally:
        identity.close()
    trace_id = root.get_span_context().trace_id
    to_consul = _to_consul(instrumented, fake_consul)
    assert [s for s in to_consul if s.context.trace_id == trace_id] == []
    assert to_consul == []
