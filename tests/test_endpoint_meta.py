"""A change to an instance's meta alone reaches the balancer and mesh_state.

Routing by subset reads meta; an endpoint whose address, weight and tags are unchanged but
whose meta changed is a different endpoint to the mesh.
"""

import asyncio
import time

from meshlib import AsyncMeshClient, ConsulDiscovery, ConsulSettings
from meshlib.endpoint import Endpoint
from meshlib.testing import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour


def test_endpoints_differing_only_in_meta_are_not_equal() -> None:
    a = Endpoint(host="127.0.0.1", port=8080, meta={"version": "1"})
    b = Endpoint(host="127.0.0.1", port=8080, meta={"version": "2"})
    assert a != b
    assert hash(a) == hash(b)  # still hashable; equal ones hash alike
    assert a == Endpoint(host="127.0.0.1", port=8080, meta={"version": "1"})


def _meta(state: dict, service: str) -> list[dict[str, str]]:  # type: ignore[type-arg]
    return [e["meta"] for e in state["services"][service]["endpoints"]]


async def test_meta_only_change_reaches_mesh_state_within_the_watch(
    fake_consul: FakeConsul,
) -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        fake_consul.register_service(
            "users", service_id="u0", address="127.0.0.1", port=up.port, meta={"version": "1"}
        )
        settings = ConsulSettings(host="127.0.0.1", port=fake_consul.port)
        discovery = ConsulDiscovery(settings)
        async with AsyncMeshClient(discovery=discovery) as client:
            assert (await client.get("http://users/")).status_code == 200
            assert _meta(client.mesh_state(), "users") == [{"version": "1"}]
            fake_consul.register_service(
                "users", service_id="u0", address="127.0.0.1", port=up.port, meta={"version": "2"}
            )
            # The blocking watch returns at once on the change; 3 s is far above that.
            end = time.monotonic() + 3.0
            while _meta(client.mesh_state(), "users") != [{"version": "2"}]:
                assert time.monotonic() < end, client.mesh_state()["services"]["users"]
                await asyncio.sleep(0.02)
            assert (await client.get("http://users/")).status_code == 200
        discovery.close()
