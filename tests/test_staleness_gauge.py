"""The staleness gauge reads the discovery's own state, not the router's cached resolution.

During a Consul outage with no requests, nothing refreshes the router; the gauge must still
report how old the last good answer is.
"""

import asyncio
import time

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import meshlib
from meshlib.clock import ManualClock
from meshlib.testing import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour


def _staleness(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "mesh.discovery.staleness":
                    for p in m.data.data_points:
                        out[str(p.attributes["mesh.service"])] = float(p.value)
    return out


async def test_staleness_gauge_grows_during_an_outage_without_requests(
    metric_reader: InMemoryMetricReader, fake_consul: FakeConsul
) -> None:
    clock = ManualClock()
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        fake_consul.register_service("users", service_id="u0", address="127.0.0.1", port=up.port)
        settings = meshlib.ConsulSettings(host="127.0.0.1", port=fake_consul.port)
        discovery = meshlib.ConsulDiscovery(settings, clock=clock)
        async with meshlib.AsyncMeshClient(discovery=discovery, clock=clock) as client:
            assert (await client.get("http://users/")).status_code == 200
            assert _staleness(metric_reader) == {"users": 0.0}
            fake_consul.down()
            try:
                end = time.monotonic() + 5.0
                while not discovery.watch_state()["users"]["errors"]:
                    assert time.monotonic() < end, "the watch never saw the outage"
                    await asyncio.sleep(0.02)
                clock.advance(30.0)
                # No request since the outage began: only the discovery knows it is stale.
                assert _staleness(metric_reader)["users"] >= 30.0
            finally:
                fake_consul.up()
        discovery.close()
