"""Locality end to end: picks stay in the caller's zone and spill over when it fails."""

import random
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

import meshlib
from meshlib.errors import ConfigError
from meshlib.routing.locality import LocalityPolicy
from meshlib.testing import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour


@pytest.fixture
async def zoned() -> AsyncIterator[tuple[FakeConsul, dict[str, Upstream]]]:
    ups = {n: Upstream(UpstreamBehaviour(name=n)) for n in "abcde"}
    for u in ups.values():
        await u.start()
    try:
        with FakeConsul() as consul:
            for name, zone in (("a", "z1"), ("b", "z1"), ("c", "z2"), ("d", "z2"), ("e", "z2")):
                consul.register_service(
                    "api",
                    service_id=f"api-{name}",
                    address="127.0.0.1",
                    port=ups[name].port,
                    meta={"zone": zone},
                )
            yield consul, ups
    finally:
        for u in ups.values():
            await u.stop()


def _client(consul: FakeConsul, d: meshlib.ConsulDiscovery) -> meshlib.AsyncMeshClient:
    config = meshlib.MeshConfig(locality=meshlib.LocalityPolicy(zone="z1"))
    return meshlib.AsyncMeshClient(discovery=d, config=config, rng=random.Random(3))


async def test_picks_prefer_the_callers_zone_and_spill_over_when_it_fails(
    zoned: tuple[FakeConsul, dict[str, Upstream]],
) -> None:
    consul, ups = zoned
    d = meshlib.ConsulDiscovery(meshlib.ConsulSettings(host="127.0.0.1", port=consul.port))
    try:
        async with _client(consul, d) as client:
            seen = Counter()
            for _ in range(60):
                seen[(await client.get("http://api/")).headers["x-upstream"]] += 1
            assert seen["c"] + seen["d"] + seen["e"] == 0  # z2 gets nothing while z1 is healthy
            assert seen["a"]
            assert seen["b"]
            zones = client.mesh_state()["services"]["api"]["zones"]
            assert zones["endpoints_per_zone"] == {"z1": 2, "z2": 3}
            assert zones["picks_local"] >= 60
            assert zones["spilling"] is False
            # zone z1 fails: failure accrual ejects its endpoints (2 of 5: no panic mode), and
            # picks spill over to z2
            await ups["a"].stop()
            await ups["b"].stop()
            served = []
            for _ in range(40):
                try:
                    served.append((await client.get("http://api/")).headers["x-upstream"])
                except httpx.ConnectError:
                    served.append("error")
            assert set(served[-10:]) <= {"c", "d", "e"}
            zones = client.mesh_state()["services"]["api"]["zones"]
            assert zones["spilling"] is True
            assert zones["picks_spilled"] >= 10
    finally:
        d.close()


def test_zone_settings_come_from_the_environment_with_clear_errors() -> None:
    config = meshlib.MeshConfig.from_env({"MESH_ZONE": "eu-1a", "MESH_ZONE_KEY": "az"})
    assert config.locality == LocalityPolicy(zone="eu-1a", key="az")
    assert meshlib.MeshConfig.from_env({}).locality is None
    with pytest.raises(ConfigError, match="MESH_ZONE_MIN_HEALTHY"):
        meshlib.MeshConfig.from_env({"MESH_ZONE": "a", "MESH_ZONE_MIN_HEALTHY": "2"})


def test_an_overloaded_local_zone_spills_over_and_returns_when_the_hold_ends() -> None:
    from meshlib.balance.balancer import EndpointSet, EndpointState
    from meshlib.discovery.base import Resolution, Target
    from meshlib.endpoint import Endpoint
    from meshlib.load.metric import PeakEwma
    from meshlib.routing.locality import Zones
    from meshlib.routing.state import ServiceState

    def state(port: int, zone: str) -> EndpointState:
        ep = Endpoint(host="127.0.0.1", port=port, meta={"zone": zone})
        return EndpointState(ep, PeakEwma(now=0.0))

    states = [state(1, "z1"), state(2, "z2"), state(3, "z2")]
    svc = ServiceState(
        Target("api"), Resolution(Target("api"), (), "test", 0.0), EndpointSet(states)
    )
    zones = Zones(LocalityPolicy(zone="z1"))
    assert [s.address for s in zones.choose(svc, 1.0).states] == ["127.0.0.1:1"]
    states[0].metric.overloaded(until=5.0)  # a 429 with Retry-After: 4 s
    assert len(zones.choose(svc, 2.0).states) == 3  # spilled over to every zone
    assert [s.address for s in zones.choose(svc, 6.0).states] == ["127.0.0.1:1"]  # back home
    assert zones.describe(svc)["picks_spilled"] == 1


async def test_zone_and_subsets_can_come_from_node_meta(upstreams: list[Upstream]) -> None:
    a, b, c = (u.port for u in upstreams)
    with FakeConsul() as consul:
        consul.register_service(
            "api",
            service_id="a",
            address="127.0.0.1",
            port=a,
            node="n1",
            node_meta={"zone": "z1", "rack": "r1"},
        )
        consul.register_service(
            "api",
            service_id="b",
            address="127.0.0.1",
            port=b,
            node="n2",
            node_meta={"zone": "z2", "rack": "r2"},
        )
        consul.register_service(
            "api",
            service_id="c",
            address="127.0.0.1",
            port=c,
            node="n2",
            node_meta={"zone": "z2", "rack": "r2"},
        )
        d = meshlib.ConsulDiscovery(meshlib.ConsulSettings(host="127.0.0.1", port=consul.port))
        try:
            async with _client(consul, d) as client:
                local = {(await client.get("http://api/")).headers["x-upstream"] for _ in range(20)}
            consul.set_config_entry(
                {
                    "Kind": "service-resolver",
                    "Name": "api",
                    "DefaultSubset": "rack2",
                    "Subsets": {"rack2": {"Filter": "Node.Meta.rack == r2"}},
                }
            )
            d2 = meshlib.ConsulDiscovery(meshlib.ConsulSettings(host="127.0.0.1", port=consul.port))
            try:
                async with meshlib.AsyncMeshClient(discovery=d2) as client:
                    racked = {
                        (await client.get("http://api/")).headers["x-upstream"] for _ in range(20)
                    }
            finally:
                d2.close()
        finally:
            d.close()
    assert local == {"a"}  # z1 by the node's metadata
    assert racked == {"b", "c"}  # the subset filter reads Node.Meta


def test_meshlib_config_names_the_zone_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshlib.cli import main

    monkeypatch.setenv("MESH_ZONE", "eu-1a")
    assert main(["config"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "MESH_ZONE" in x)
    assert "zone=eu-1a" in line
    assert "(environment)" in line


async def test_a_chain_targets_zone_split_is_shown(upstreams: list[Upstream]) -> None:
    eps = [
        {"address": f"127.0.0.1:{u.port}", "meta": {"zone": z, "v": "1"}}
        for u, z in zip(upstreams, ("z1", "z2", "z2"), strict=True)
    ]
    entry = {
        "Kind": "service-resolver",
        "Name": "api",
        "DefaultSubset": "one",
        "Subsets": {"one": {"Filter": "Service.Meta.v == 1"}},
    }
    d = meshlib.StaticDiscovery({"api": eps}, config_entries=[entry])
    config = meshlib.MeshConfig(locality=meshlib.LocalityPolicy(zone="z1"))
    async with meshlib.AsyncMeshClient(discovery=d, config=config) as client:
        seen = {(await client.get("http://api/")).headers["x-upstream"] for _ in range(10)}
        zones = client.mesh_state()["traffic"]["targets_in_use"]["one.api.default.default.dc1"]
    assert seen == {"a"}
    assert zones["zones"]["picks_local"] == 10
