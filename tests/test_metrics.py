"""Metrics by the conventions, low-cardinality only; logging of state changes once."""

import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import meshlib
from meshlib.clock import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour

HIGH_CARDINALITY = {
    "url.full",
    "url.path",
    "network.peer.address",
    "network.peer.port",
    "mesh.endpoint",
}


def _metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


async def test_metric_names_units_and_attributes(metric_reader: InMemoryMetricReader) -> None:
    async with (
        Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad,
        Upstream(UpstreamBehaviour(name="ok")) as ok,
    ):
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{bad.port}", f"127.0.0.1:{ok.port}"]}
            ),
            config=meshlib.MeshConfig(balancer="round-robin"),
            clock=ManualClock(),
        ) as client:
            for _ in range(4):
                await client.get("http://users/")
            m = _metrics(metric_reader)
    duration = m["http.client.request.duration"]
    assert duration.unit == "s"
    points = list(duration.data.data_points)
    statuses = {p.attributes["http.response.status_code"] for p in points}
    assert statuses == {200, 503}
    for p in points:
        assert p.attributes["server.address"] == "users"
        assert p.attributes["http.request.method"] == "GET"
        assert list(p.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert sum(p.count for p in points) == 8  # round robin: every call meets "bad" first
    retries = m["mesh.client.retries"].data.data_points
    assert sum(p.value for p in retries) == 4
    assert {p.attributes["mesh.retry.reason"] for p in retries} == {"retry"}
    calls = m["mesh.client.call.duration"]
    assert sum(p.count for p in calls.data.data_points) == 4
    active = m["http.client.active_requests"].data.data_points
    assert sum(p.value for p in active) == 0
    endpoints = m["mesh.client.endpoints"].data.data_points
    assert {p.attributes["mesh.endpoint.state"] for p in endpoints} == {"healthy", "ejected"}
    for metric in m.values():
        for p in metric.data.data_points:
            assert not (set(p.attributes) & HIGH_CARDINALITY), metric.name


async def test_breaker_transitions_and_budget_are_counted(
    metric_reader: InMemoryMetricReader,
) -> None:
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0, fail_status=500)) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{bad.port}"]}),
            clock=ManualClock(),
        ) as client:
            for _ in range(6):
                await client.get("http://users/")
            m = _metrics(metric_reader)
    states = {
        p.attributes["mesh.breaker.state"]
        for p in m["mesh.client.breaker.transitions"].data.data_points
    }
    assert "dead" in states


async def test_state_changes_are_logged_once_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meshlib")
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0, fail_status=500)) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{bad.port}"]}),
            clock=ManualClock(),
        ) as client:
            for _ in range(50):
                await client.get("http://users/")
    ejected = [r for r in caplog.records if "ejected" in r.getMessage()]
    assert len(ejected) == 1
    assert ejected[0].service == "users"  # type: ignore[attr-defined]
    assert ejected[0].endpoint == f"127.0.0.1:{bad.port}"  # type: ignore[attr-defined]
    panic = [r for r in caplog.records if "panic mode on" in r.getMessage()]
    assert len(panic) == 1


def test_library_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("meshlib").handlers)


async def test_active_requests_and_gauges_cover_every_client(
    metric_reader: InMemoryMetricReader,
) -> None:
    """Observable instruments keep only the first callback registered under a name, so one
    callback must report every live client: two clients' services both show, and an attempt
    whose body is still streaming counts as in flight until the stream closes."""
    async with (
        Upstream(UpstreamBehaviour(name="a")) as a,
        Upstream(UpstreamBehaviour(name="b")) as b,
    ):
        first = meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{a.port}"]}),
            clock=ManualClock(),
        )
        second = meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"orders": [f"127.0.0.1:{b.port}"]}),
            clock=ManualClock(),
        )
        async with first, second:
            await first.get("http://users/")
            async with second.stream("GET", "http://orders/") as streaming:
                m = _metrics(metric_reader)
                active = {
                    p.attributes["server.address"]: p.value
                    for p in m["http.client.active_requests"].data.data_points
                }
                assert active == {"users": 0, "orders": 1}
                await streaming.aread()
            m = _metrics(metric_reader)
            active = {
                p.attributes["server.address"]: p.value
                for p in m["http.client.active_requests"].data.data_points
            }
            assert active == {"users": 0, "orders": 0}
            services = {
                p.attributes["mesh.service"] for p in m["mesh.client.endpoints"].data.data_points
            }
            assert services == {"users", "orders"}
        # Closed clients are no longer reported.
        assert "http.client.active_requests" not in _metrics(metric_reader)
