"""End to end: the sync MeshClient against real upstreams on 127.0.0.1."""

from collections import Counter

import httpx
import pytest

import meshlib
from meshlib.upstream import UpstreamThread


def _discovery(servers: list[UpstreamThread]) -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": [f"127.0.0.1:{s.port}" for s in servers]})


def test_sync_client_balances_and_keeps_httpx_api(upstream_threads: list[UpstreamThread]) -> None:
    with meshlib.MeshClient(
        discovery=_discovery(upstream_threads), headers={"x-team": "core"}, timeout=2.0
    ) as client:
        seen = Counter(client.get("http://users/").headers["x-upstream"] for _ in range(60))
        echo = client.post("http://users/echo", json={"a": 1}).json()
    assert set(seen) == {"a", "b", "c"}
    assert echo["headers"]["host"] == "users"
    assert echo["headers"]["x-team"] == "core"
    assert echo["method"] == "POST"


def test_sync_keep_alive_reuses_connections(upstream_threads: list[UpstreamThread]) -> None:
    with meshlib.MeshClient(discovery=_discovery(upstream_threads[:1])) as client:
        for _ in range(20):
            client.get("http://users/")
    stats = upstream_threads[0].stats()
    assert stats.total == 20
    assert stats.connections == 1


def test_sync_unknown_service(upstream_threads: list[UpstreamThread]) -> None:
    with (
        meshlib.MeshClient(discovery=_discovery(upstream_threads)) as client,
        pytest.raises(meshlib.NoEndpointsAvailable, match="orders"),
    ):
        client.get("http://orders/")


def test_sync_stream_tracks_load_until_close(upstream_threads: list[UpstreamThread]) -> None:
    with meshlib.MeshClient(discovery=_discovery(upstream_threads[:1])) as client:
        client.get("http://users/")
        (service,) = list(client.mesh.router.services())
        (state,) = service.eps.states
        with client.stream("GET", "http://users/echo") as r:
            assert state.metric.pending == 1
            r.read()
        assert state.metric.pending == 0


def test_sync_pass_through(upstream_threads: list[UpstreamThread]) -> None:
    direct = upstream_threads[0]
    with meshlib.MeshClient(discovery=_discovery(upstream_threads[1:])) as client:
        r = client.get(f"http://127.0.0.1:{direct.port}/echo")
    assert r.headers["x-upstream"] == "a"
    assert isinstance(client.mesh, httpx.BaseTransport)
