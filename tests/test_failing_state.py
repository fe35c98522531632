"""An endpoint the balancer is avoiding is visible before it is ejected: state "failing".

A killed upstream with no Consul check stays in discovery; P2C routes around it because its
failures raise its load score, and operators must see that in mesh_state, the Prometheus text
and ``meshlib status``, not "alive, 0 ejected".
"""

from __future__ import annotations

import socket

import meshlib
from meshlib.admin.metrics import render_prometheus
from meshlib.upstream import Upstream, UpstreamBehaviour


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def test_a_failing_endpoint_shows_as_failing_with_its_count() -> None:
    dead_port = _closed_port()
    async with Upstream(UpstreamBehaviour(name="ok")) as ok:
        discovery = meshlib.StaticDiscovery(
            {"users": [f"127.0.0.1:{dead_port}", f"127.0.0.1:{ok.port}"]}
        )
        config = meshlib.MeshConfig(balancer="round-robin")
        async with meshlib.AsyncMeshClient(discovery=discovery, config=config) as client:
            for _ in range(3):  # each call meets the closed port first, then requeues
                assert (await client.get("http://users/")).status_code == 200
            state = client.mesh_state()
    svc = state["services"]["users"]
    eps = {e["address"]: e for e in svc["endpoints"]}
    bad = eps[f"127.0.0.1:{dead_port}"]
    assert bad["state"] == "failing"
    assert 1 <= bad["consecutive_failures"] < 5  # below the ejection threshold
    assert eps[f"127.0.0.1:{ok.port}"]["state"] == "alive"
    assert svc["dead"] == 0  # not ejected yet: failing is not dead
    text = render_prometheus(state)
    assert (
        f'meshlib_endpoint_state{{service="users",endpoint="127.0.0.1:{dead_port}",'
        f'state="failing"}} 1'
    ) in text
