"""With opentelemetry-instrumentation-httpx on, each attempt still has exactly one CLIENT span."""

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from meshlib.clock import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


@pytest.fixture
def global_instrumentation(spans: InMemorySpanExporter) -> Iterator[None]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument()
    try:
        yield
    finally:
        instrumentor.uninstrument()


def _client_spans(spans: InMemorySpanExporter) -> list[str]:
    return [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]


@pytest.mark.parametrize("engine", ["fast", "httpx"])
async def test_global_mode_one_client_span_per_attempt(
    spans: InMemorySpanExporter, global_instrumentation: None, engine: str
) -> None:
    async with (
        Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad,
        Upstream(UpstreamBehaviour(name="ok")) as ok,
    ):
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{bad.port}", f"127.0.0.1:{ok.port}"]}
            ),
            config=meshlib.MeshConfig(balancer="round-robin", engine=engine),
            clock=ManualClock(),
        ) as client:
            r = await client.get("http://users/")
            direct = await client.get(f"http://127.0.0.1:{ok.port}/echo")
    assert r.status_code == 200
    finished = spans.get_finished_spans()
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    internal = [s for s in finished if s.kind is SpanKind.INTERNAL]
    assert len(internal) == 1
    # two attempts + one pass-through request: three CLIENT spans, none doubled
    assert len(clients) == 3
    assert "traceparent" not in direct.json()["headers"]


def test_global_mode_sync_client(spans: InMemorySpanExporter, global_instrumentation: None) -> None:
    with UpstreamThread(UpstreamBehaviour(name="ok")) as ok:
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{ok.port}"]}),
            config=meshlib.MeshConfig(engine="httpx"),
        ) as client:
            assert client.get("http://users/").status_code == 200
    assert len(_client_spans(spans)) == 1


async def test_per_client_mode_adds_no_second_span(spans: InMemorySpanExporter) -> None:
    async with Upstream(UpstreamBehaviour(name="ok")) as ok:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{ok.port}"]}),
            config=meshlib.MeshConfig(engine="httpx"),
        ) as client:
            HTTPXClientInstrumentor.instrument_client(client)
            await client.get("http://users/")
    kinds = [s.kind for s in spans.get_finished_spans()]
    assert kinds.count(SpanKind.CLIENT) == 1
    assert kinds.count(SpanKind.INTERNAL) == 1
