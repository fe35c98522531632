"""An attempt's CLIENT span ends when the attempt's outcome is known, not at the headers.

A call that reads its body inside the retry loop (``client.get`` without ``stream``) can fail
mid-body after a 200 head; that attempt failed, so its span must say so.
"""

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import meshlib
from _engine_server import EngineServer


@pytest.fixture
def server() -> Iterator[EngineServer]:
    s = EngineServer().start()
    try:
        yield s
    finally:
        s.stop()


def _discovery(server: EngineServer) -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": [server.url.removeprefix("http://")]})


def _assert_attempts_failed(spans: InMemorySpanExporter) -> None:
    attempts = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(attempts) >= 2  # retried: a reset mid-body is retryable
    for s in attempts:
        attrs = dict(s.attributes or {})
        assert s.status.status_code is StatusCode.ERROR, attrs
        assert attrs["error.type"] == "RemoteProtocolError"
        assert attrs["http.response.status_code"] == 200  # the head did arrive


async def test_async_attempt_failing_mid_body_has_an_error_span(
    spans: InMemorySpanExporter, server: EngineServer
) -> None:
    config = meshlib.MeshConfig(timeout=5.0)
    async with meshlib.AsyncMeshClient(discovery=_discovery(server), config=config) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("http://users/truncated")
    _assert_attempts_failed(spans)


def test_sync_attempt_failing_mid_body_has_an_error_span(
    spans: InMemorySpanExporter, server: EngineServer
) -> None:
    config = meshlib.MeshConfig(timeout=5.0)
    with meshlib.MeshClient(discovery=_discovery(server), config=config) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("http://users/truncated")
    _assert_attempts_failed(spans)
