"""Traces by the stable HTTP conventions: one INTERNAL call span, one CLIENT span per attempt."""

from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from meshlib.clock import ManualClock
from meshlib.otel.tracing import redact_url
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


@pytest.fixture
async def bad_and_ok() -> AsyncIterator[tuple[Upstream, Upstream]]:
    async with (
        Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad,
        Upstream(UpstreamBehaviour(name="ok")) as ok,
    ):
        yield bad, ok


def _client(*ups: Upstream, **config: object) -> meshlib.AsyncMeshClient:
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{u.port}" for u in ups]}),
        config=meshlib.MeshConfig(balancer="round-robin", **config),  # type: ignore[arg-type]
        clock=ManualClock(),
    )


def _traceparent_span_id(headers: dict[str, str]) -> int:
    return int(headers["traceparent"].split("-")[2], 16)


async def test_one_internal_span_and_one_client_span_per_attempt(
    spans: InMemorySpanExporter, bad_and_ok: tuple[Upstream, Upstream]
) -> None:
    bad, ok = bad_and_ok
    async with _client(bad, ok) as client:
        r = await client.get("http://users/echo?sig=secret")
    assert r.status_code == 200
    finished = spans.get_finished_spans()
    internal = [s for s in finished if s.kind is SpanKind.INTERNAL]
    attempts = sorted(
        (s for s in finished if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    assert len(internal) == 1
    assert len(attempts) == 2  # spans per call == attempts + 1
    (call,) = internal
    assert call.name == "mesh users"
    for s in attempts:
        assert s.parent is not None
        assert s.parent.span_id == call.context.span_id
        assert s.context.trace_id == call.context.trace_id
        assert s.name == "GET"
    first, second = attempts
    assert "http.request.resend_count" not in (first.attributes or {})
    assert (second.attributes or {})["http.request.resend_count"] == 1
    a, b = dict(first.attributes or {}), dict(second.attributes or {})
    assert a["http.response.status_code"] == 503
    assert a["error.type"] == "503"
    assert b["http.response.status_code"] == 200
    assert b["server.address"] == "users"
    assert b["server.port"] == 80
    assert b["network.peer.address"] == "127.0.0.1"
    assert b["network.peer.port"] == ok.port
    assert b["url.full"] == "http://users/echo?sig=REDACTED"
    assert [e.name for e in call.events] == ["mesh.retry"]
    # The upstream saw the attempt's own span in traceparent.
    seen = dict(bad.stats().recent_headers[-1])
    assert _traceparent_span_id(seen) == first.context.span_id
    assert _traceparent_span_id(r.json()["headers"]) == second.context.span_id


def test_redaction() -> None:
    url = httpx.URL("https://user:pw@users/x?X-Goog-Signature=abc&AWSAccessKeyId=k&page=2")
    red = redact_url(url)
    assert red.startswith("https://REDACTED:REDACTED@users/x?")
    assert "pw" not in red
    assert "abc" not in red
    assert "page=2" in red
    # A percent-escaped name is still a signature; a plain query is left as it is.
    assert "abc" not in redact_url(httpx.URL("https://users/x?%73ig=abc"))
    assert redact_url(httpx.URL("http://users/x?page=2&q=a+b")) == "http://users/x?page=2&q=a+b"


async def test_documented_error_types(spans: InMemorySpanExporter) -> None:
    async with Upstream(UpstreamBehaviour(name="slow", latency=1.0)) as slow:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{slow.port}"], "none": []}),
            config=meshlib.MeshConfig(timeout=0.1),
        ) as client:
            with pytest.raises(meshlib.DeadlineExceeded):
                await client.get("http://users/")
            with pytest.raises(meshlib.NoEndpointsAvailable):
                await client.get("http://none/")
    calls = [s for s in spans.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    types = sorted((s.attributes or {})["error.type"] for s in calls)
    assert types == ["deadline_exceeded", "no_endpoints"]
    (attempt,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert (attempt.attributes or {})["error.type"] == "timeout"


async def test_retry_budget_exhausted_error_type(spans: InMemorySpanExporter) -> None:
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad:
        budget = meshlib.BudgetPolicy(min_per_sec=0, percent=0)
        async with _client(bad, budget=budget) as client:
            await client.get("http://users/")
    (call,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert (call.attributes or {})["error.type"] == "retry_budget_exhausted"


async def test_no_trace_or_baggage_to_pass_through_or_redirect_out(
    spans: InMemorySpanExporter,
) -> None:
    outside: list[httpx.Request] = []

    def mesh(request: httpx.Request) -> httpx.Response:
        assert "traceparent" in request.headers
        assert "baggage" in request.headers
        return httpx.Response(302, headers={"location": "http://api.example.com/next"})

    def third_party(request: httpx.Request) -> httpx.Response:
        outside.append(request)
        return httpx.Response(200)

    transport = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]}),
        config=meshlib.MeshConfig(),
        transport=httpx.MockTransport(mesh),
        passthrough=httpx.MockTransport(third_party),
    )
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with trace.get_tracer("test").start_as_current_span("handler"):
            async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
                await client.get("http://users/start")
                await client.get("http://api.example.com/direct")
    finally:
        context.detach(token)
    assert len(outside) == 2
    for req in outside:
        for header in ("traceparent", "tracestate", "baggage", meshlib.DEADLINE_HEADER):
            assert header not in req.headers


async def test_allow_listed_pass_through_host_gets_trace_context(
    spans: InMemorySpanExporter,
) -> None:
    """An allow-listed host gets trace context; a host that is not, gets none, including when
    the allow-listed host redirects to it (the headers went on a copy for that request only)."""
    sent: list[tuple[str, httpx.Headers]] = []

    def third_party(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.host, httpx.Headers(request.headers)))  # as sent
        if request.url.path == "/hop":
            return httpx.Response(302, headers={"location": "http://api.example.com/landed"})
        return httpx.Response(200)

    transport = meshlib.AsyncMeshTransport(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]}),
        config=meshlib.MeshConfig(propagate_hosts=("api.partner.com",)),
        passthrough=httpx.MockTransport(third_party),
    )
    with trace.get_tracer("test").start_as_current_span("handler"):
        async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
            await client.get("http://api.partner.com/x")
            await client.get("http://api.example.com/x")
            request = client.build_request("GET", "http://api.partner.com/hop")
            await client.send(request, follow_redirects=True)
    hosts = [host for host, _ in sent]
    assert hosts == ["api.partner.com", "api.example.com", "api.partner.com", "api.example.com"]
    assert "traceparent" in sent[0][1]
    assert "traceparent" not in sent[1][1]
    assert "traceparent" in sent[2][1]
    assert "traceparent" not in sent[3][1]  # the redirect out of the allow list
    assert "traceparent" not in request.headers


async def test_without_sdk_no_headers_unless_a_trace_is_incoming() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers))
        return httpx.Response(200)

    async with meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]}),
        transport=httpx.MockTransport(handler),
    ) as client:
        await client.get("http://users/")
        carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        token = context.attach(propagate.extract(carrier))
        try:
            await client.get("http://users/")
        finally:
            context.detach(token)
    assert "traceparent" not in seen[0]
    assert seen[1]["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def test_b3_propagation_when_configured(
    spans: InMemorySpanExporter,
    restore_propagator: None,
) -> None:
    from opentelemetry.propagators.b3 import B3MultiFormat

    propagate.set_global_textmap(B3MultiFormat())
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.headers))
        return httpx.Response(200)

    async with meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]}),
        transport=httpx.MockTransport(handler),
    ) as client:
        await client.get("http://users/")
    (attempt,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert int(seen[0]["x-b3-spanid"], 16) == attempt.context.span_id
    assert "traceparent" not in seen[0]


async def test_attempt_headers_go_on_the_wire_without_changing_the_callers_request(
    spans: InMemorySpanExporter, bad_and_ok: tuple[Upstream, Upstream]
) -> None:
    """Trace context and deadline are the attempt's own: the upstream sees exactly one of each
    (the caller's stale traceparent is replaced, not duplicated), and the caller's request
    object keeps its own headers, so nothing follows a redirect out of the mesh."""
    _, ok = bad_and_ok
    stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with _client(ok, timeout=5.0) as client:
        request = client.build_request("GET", "http://users/echo", headers={"traceparent": stale})
        r = await client.send(request)
    assert r.status_code == 200
    raw = ok.stats().recent_headers[-1]
    names = [k.lower() for k, _ in raw]
    assert names.count("traceparent") == 1
    assert names.count(meshlib.DEADLINE_HEADER) == 1
    (attempt,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert _traceparent_span_id(dict(raw)) == attempt.context.span_id
    assert request.headers["traceparent"] == stale
    assert meshlib.DEADLINE_HEADER not in request.headers
    assert r.request.url == httpx.URL("http://users/echo")
    assert "mesh_attempt_headers" not in r.request.extensions


def test_sync_client_sends_attempt_headers_without_changing_the_request(
    spans: InMemorySpanExporter,
) -> None:
    with UpstreamThread(UpstreamBehaviour(name="ok")) as ok:
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{ok.port}"]}),
            config=meshlib.MeshConfig(timeout=5.0),
        ) as client:
            request = client.build_request("GET", "http://users/echo")
            r = client.send(request)
    assert r.status_code == 200
    (attempt,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert _traceparent_span_id(r.json()["headers"]) == attempt.context.span_id
    assert meshlib.DEADLINE_HEADER in r.json()["headers"]
    assert "traceparent" not in request.headers
    assert meshlib.DEADLINE_HEADER not in request.headers
