"""A three-service chain on 127.0.0.1 (ASGI -> sync WSGI -> ASGI) yields one trace."""

import sys
from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.trace_chain.run import chain


def test_chain_is_one_trace_with_one_server_span_per_instrumented_service(
    spans: InMemorySpanExporter,
) -> None:
    with chain() as port:
        r = httpx.get(
            f"http://127.0.0.1:{port}/work", headers={meshlib.DEADLINE_HEADER: "3000"}, timeout=5
        )
    assert r.json()["next"]["next"] == {"service": "c"}
    assert 0 < int(r.json()["next"]["deadline_ms"]) <= 3000
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished}) == 1
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(servers) == 2  # A (FastAPI's own) and C (OpenTelemetry ASGI); none doubled
    mesh = {s.name: s for s in finished if s.name.startswith("mesh ")}
    attempts = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert set(mesh) == {"mesh b", "mesh c"}
    # B continued A's attempt: its mesh span's parent is A's CLIENT span to B.
    a_to_b = next(
        s for s in attempts if s.parent and s.parent.span_id == mesh["mesh b"].context.span_id
    )
    assert mesh["mesh c"].parent is not None
    assert mesh["mesh c"].parent.span_id == a_to_b.context.span_id
    # C's server span continues B's attempt.
    b_to_c = next(
        s for s in attempts if s.parent and s.parent.span_id == mesh["mesh c"].context.span_id
    )
    c_server = next(s for s in servers if s.parent and s.parent.span_id == b_to_c.context.span_id)
    assert c_server is not None
