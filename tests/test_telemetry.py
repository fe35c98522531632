"""meshlib.telemetry.configure(): an opt-in SDK setup, and the trace tree the demo prints."""

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import meshlib
from meshlib.clock import ManualClock
from meshlib.otel.metrics import MeshMetrics
from meshlib.telemetry import configure, format_trace_tree


@pytest.fixture
def clean_globals() -> Iterator[None]:
    def reset() -> None:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER = None

    reset()
    yield
    reset()


async def test_configure_installs_sdk_and_traces_flow(clean_globals: None) -> None:
    exporter = InMemorySpanExporter()
    installed = configure(traces="none", metrics_exporter="none", span_exporter=exporter)
    assert installed.tracer_provider is trace.get_tracer_provider()
    # No metric exporter and no reader: no MeterProvider, so calls pay nothing for metrics.
    assert installed.meter_provider is None
    assert not MeshMetrics.enabled()
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(503 if calls["n"] == 1 else 200)

    async with meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:1", "127.0.0.1:2"]}),
        transport=httpx.MockTransport(handler),
        clock=ManualClock(),
    ) as client:
        await client.get("http://users/")
    installed.shutdown()
    lines = format_trace_tree(list(exporter.get_finished_spans()))
    assert lines[0].startswith("mesh users [INTERNAL]")
    assert any("503" in line for line in lines)
    assert any("resend_count=1" in line for line in lines)
    assert any("mesh.retry" in line for line in lines)


def test_configure_installs_a_meter_provider_for_a_reader(clean_globals: None) -> None:
    reader = InMemoryMetricReader()
    installed = configure(traces="none", metrics_exporter="none", metric_reader=reader)
    assert installed.meter_provider is metrics.get_meter_provider()
    assert MeshMetrics.enabled()
    installed.shutdown()


def test_configure_leaves_an_installed_provider_alone(clean_globals: None) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    mine = TracerProvider()
    trace.set_tracer_provider(mine)
    installed = configure(traces="none", metrics_exporter="none")
    assert installed.tracer_provider is None
    assert trace.get_tracer_provider() is mine
    installed.shutdown()


def test_unknown_exporter_is_a_config_error(clean_globals: None) -> None:
    with pytest.raises(meshlib.ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        configure(traces="zipkin")


def test_otlp_without_its_package_says_what_to_install(clean_globals: None) -> None:
    try:
        import opentelemetry.exporter.otlp  # noqa: F401
    except ImportError:
        with pytest.raises(meshlib.ConfigError, match="opentelemetry-exporter-otlp"):
            configure(traces="otlp", metrics_exporter="none")
    else:
        pytest.skip("the OTLP exporter is installed here")
