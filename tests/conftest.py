"""Shared fixtures: real upstream servers on 127.0.0.1, and a fresh OpenTelemetry SDK per test.

The OpenTelemetry API lets a process set its providers once; tests need a clean in-memory SDK
each, and tests without any SDK too, so the telemetry fixtures reset the API's globals around
each use.
"""

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    """Three healthy upstreams in the test's event loop: a, b, c."""
    servers = [Upstream(UpstreamBehaviour(name=n, seed=i)) for i, n in enumerate("abc")]
    for s in servers:
        await s.start()
    try:
        yield servers
    finally:
        for s in servers:
            await s.stop()


@pytest.fixture
def upstream_threads() -> Iterator[list[UpstreamThread]]:
    """Three healthy upstreams on background threads, for sync clients: a, b, c."""
    servers = [UpstreamThread(UpstreamBehaviour(name=n, seed=i)) for i, n in enumerate("abc")]
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def _reset_trace() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def _reset_metrics() -> None:
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_trace()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_trace()


@pytest.fixture
def metric_reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _reset_metrics()
    metrics.set_meter_provider(provider)
    try:
        yield reader
    finally:
        provider.shutdown()
        _reset_metrics()


@pytest.fixture
def restore_propagator() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    try:
        yield
    finally:
        propagate.set_global_textmap(saved)


@pytest.fixture(autouse=True)
def _close_leaked_consul_discoveries() -> Iterator[None]:
    """A test that forgets to close a ConsulDiscovery leaves its watch retrying against a
    FakeConsul that is gone; those retries would land in a later test (under a mocking
    library, as requests it did not expect). Close whatever a test left open."""
    yield
    from meshlib.consul import loop

    for discovery in list(loop._live):
        if not getattr(discovery, "_closed", True):
            discovery.close()  # type: ignore[attr-defined]
