"""Traffic management end to end: FakeConsul's config entries, real upstreams, the mesh client.

Upstreams a and b are version v1 of ``api``, c is v2; the entries split, route, fail over and
redirect between them, and each test reads which upstream answered (``x-upstream``).
"""

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import meshlib
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul
from meshlib.traffic import parse_chain
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread

RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "DefaultSubset": "v1",
    "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"},
        "v2": {"Filter": "Service.Meta.version == v2"},
        "v3": {"Filter": "Service.Meta.version == v3"},
        "slow": {"Filter": "Service.Meta.version == slow"},
    },
    "Failover": {"v3": {"ServiceSubset": "v2"}},
}


def _split(v1: int, v2: int) -> dict[str, object]:
    return {
        "Kind": "service-splitter",
        "Name": "api",
        "Splits": [{"Weight": v1, "ServiceSubset": "v1"}, {"Weight": v2, "ServiceSubset": "v2"}],
    }


@pytest.fixture
async def ups() -> AsyncIterator[dict[str, Upstream]]:
    servers = {n: Upstream(UpstreamBehaviour(name=n)) for n in "abc"}
    for s in servers.values():
        await s.start()
    try:
        yield servers
    finally:
        for s in servers.values():
            await s.stop()


@pytest.fixture
def consul(ups: dict[str, Upstream]) -> Iterator[FakeConsul]:
    with FakeConsul() as c:
        for name, version in (("a", "v1"), ("b", "v1"), ("c", "v2")):
            c.register_service(
                "api",
                service_id=f"api-{name}",
                address="127.0.0.1",
                port=ups[name].port,
                meta={"version": version},
            )
        c.set_config_entry(RESOLVER)
        yield c


@contextlib.asynccontextmanager
async def _client(c: FakeConsul, seed: int = 1) -> AsyncIterator[meshlib.AsyncMeshClient]:
    d = meshlib.ConsulDiscovery(meshlib.ConsulSettings(host="127.0.0.1", port=c.port))
    try:
        async with meshlib.AsyncMeshClient(discovery=d, rng=random.Random(seed)) as client:
            yield client
    finally:
        d.close()


async def _who(client: httpx.AsyncClient, n: int, **kw: object) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = await client.get("http://api/x", **kw)  # type: ignore[arg-type]
        assert r.status_code == 200
        seen[r.headers["x-upstream"]] += 1
    return seen


async def _until(cond, limit: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not await cond():
        assert time.monotonic() - start < limit, "condition not reached"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def _shares(chain: object, n: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    for _ in range(n):
        out[chain.choose("GET", "/", {}, {}, rng.random()).target.subset] += 1  # type: ignore[attr-defined]
    return out


async def test_canary_split_90_10_then_50_50_after_a_live_change(
    consul: FakeConsul, ups: dict[str, Upstream]
) -> None:
    c_port = ups["c"].port
    consul.set_config_entry(_split(90, 10))
    async with _client(consul) as client:
        seen = await _who(client, 300)
        v2 = seen["c"] / 300
        assert 0.04 <= v2 <= 0.17, seen  # 10 % +- sampling error of 300 draws
        assert seen["a"]
        assert seen["b"]
        chain = client.mesh.discovery.chain(Target("api"))
        shares = _shares(chain, 10_000, seed=42)
        assert abs(shares["v2"] / 10_000 - 0.10) <= 0.01
        # the live change: applied by the blocking watch, no restart
        consul.set_config_entry(_split(50, 50))

        async def applied() -> bool:
            c = client.mesh.discovery.chain(Target("api"))
            return c is not chain

        took = await _until(applied)
        assert took < 0.5  # the 100 ms budget, with room for a loaded test machine
        new_chain = client.mesh.discovery.chain(Target("api"))
        shares = _shares(new_chain, 10_000, seed=43)
        assert abs(shares["v2"] / 10_000 - 0.50) <= 0.01
        seen = await _who(client, 300)
        assert 0.40 <= seen["c"] / 300 <= 0.60, seen
        in_use = client.mesh_state()["traffic"]["targets_in_use"]
        assert in_use["v2.api.default.default.dc1"]["endpoints"] == [f"127.0.0.1:{c_port}"]


async def test_route_by_header_to_a_subset_with_its_own_timeout(consul: FakeConsul) -> None:
    consul.set_config_entry(
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "yes"}]}},
                    "Destination": {"ServiceSubset": "v2", "RequestTimeout": "2s"},
                }
            ],
        }
    )
    async with _client(consul) as client:
        canary = await _who(client, 20, headers={"x-canary": "yes"})
        plain = await _who(client, 20)
        r = await client.get("http://api/x", headers={"x-canary": "yes"})
    assert canary == Counter({"c": 20})
    assert set(plain) == {"a", "b"}
    assert r.extensions["mesh"]["target"] == "v2.api.default.default.dc1"
    assert r.extensions["mesh"]["route"] == 0


async def test_failover_from_an_empty_subset(consul: FakeConsul) -> None:
    consul.set_config_entry(
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathPrefix": "/next"}},
                    "Destination": {"ServiceSubset": "v3"},
                }
            ],
        }
    )
    async with _client(consul) as client:
        r = await client.get("http://api/next/thing")
        assert r.headers["x-upstream"] == "c"  # v3 has no instance: failover to v2
        assert r.extensions["mesh"]["service"] == "api (subset v2)"


async def test_redirect_sends_a_service_to_another(consul: FakeConsul) -> None:
    consul.set_config_entry(
        {"Kind": "service-resolver", "Name": "legacy", "Redirect": {"Service": "api"}}
    )
    async with _client(consul) as client:
        seen = Counter()
        for _ in range(20):
            r = await client.get("http://legacy/x")
            seen[r.headers["x-upstream"]] += 1
    assert set(seen) == {"a", "b"}  # api's default subset, v1


async def test_an_unsupported_route_is_reported_and_ignored(
    consul: FakeConsul, caplog: pytest.LogCaptureFixture
) -> None:
    consul.set_config_entry(
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {
                    "Match": {"HTTP": {"PathPrefix": "/old"}},
                    "Destination": {"ServiceSubset": "v2", "PrefixRewrite": "/new"},
                },
                {
                    "Match": {"HTTP": {"PathPrefix": "/v2"}},
                    "Destination": {"ServiceSubset": "v2"},
                },
            ],
        }
    )
    caplog.set_level(logging.WARNING, logger="meshlib.traffic")
    async with _client(consul) as client:
        old = await client.get("http://api/old/x")
        new = await client.get("http://api/v2/x")
        for _ in range(3):
            await client.get("http://api/old/x")
        state = client.mesh_state()
    assert old.headers["x-upstream"] in ("a", "b")  # the rewrite route is not applied
    assert new.headers["x-upstream"] == "c"  # the rest of the router still is
    warnings = [r for r in caplog.records if "PrefixRewrite" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per request
    traffic = state["traffic"]["api"]
    assert traffic["watch"]["unsupported"] == 1
    from meshlib.admin.metrics import render_prometheus

    assert 'meshlib_traffic_unsupported{service="api"} 1' in render_prometheus(state)
    assert any("PrefixRewrite" in p for p in traffic["chain"]["problems"])


async def test_the_last_good_chain_is_kept_through_a_consul_outage(consul: FakeConsul) -> None:
    consul.set_config_entry(_split(0, 100))
    async with _client(consul) as client:
        assert await _who(client, 5) == Counter({"c": 5})
        consul.stop()
        await asyncio.sleep(0.2)
        assert await _who(client, 5) == Counter({"c": 5})


def test_a_malformed_chain_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="StartNode"):
        parse_chain({"Chain": {"StartNode": "router:nope", "Nodes": {}}})


async def test_route_timeout_applies_and_outbound_still_overrides_it(consul: FakeConsul) -> None:
    slow = Upstream(UpstreamBehaviour(name="slow", latency=0.3))
    await slow.start()
    try:
        consul.register_service(
            "api",
            service_id="api-slow",
            address="127.0.0.1",
            port=slow.port,
            meta={"version": "slow"},
        )
        consul.set_config_entry(
            {
                "Kind": "service-router",
                "Name": "api",
                "Routes": [
                    {
                        "Match": {"HTTP": {"PathPrefix": "/slow"}},
                        "Destination": {"ServiceSubset": "slow", "RequestTimeout": "100ms"},
                    }
                ],
            }
        )

        @meshlib.outbound(timeout=3.0)
        async def patient(client: httpx.AsyncClient) -> httpx.Response:
            return await client.get("http://api/slow/x")

        async with _client(consul) as client:
            with pytest.raises(meshlib.DeadlineExceeded):
                await client.get("http://api/slow/x")
            r = await patient(client)
            assert r.headers["x-upstream"] == "slow"
            fast = await client.get("http://api/x")  # other routes keep the defaults
            assert fast.headers["x-upstream"] in ("a", "b")
    finally:
        await slow.stop()


def test_the_sync_client_follows_the_chain_too(upstream_threads: list[UpstreamThread]) -> None:
    with FakeConsul() as consul:
        for u, version in zip(upstream_threads, ("v1", "v1", "v2"), strict=True):
            consul.register_service(
                "api",
                service_id=f"api-{u.port}",
                address="127.0.0.1",
                port=u.port,
                meta={"version": version},
            )
        consul.set_config_entry(RESOLVER)
        consul.set_config_entry(_split(0, 100))
        d = meshlib.ConsulDiscovery(meshlib.ConsulSettings(host="127.0.0.1", port=consul.port))
        try:
            with meshlib.MeshClient(discovery=d) as client:
                seen = {client.get("http://api/x").headers["x-upstream"] for _ in range(10)}
                pinned = client.get("http://api/x", headers={"Mesh-Override": "api=v1"})
        finally:
            d.close()
    assert seen == {"c"}
    assert pinned.headers["x-upstream"] in ("a", "b")  # the override beats the split


async def test_the_override_propagates_to_mesh_calls_only_when_configured(
    consul: FakeConsul, ups: dict[str, Upstream]
) -> None:
    consul.set_config_entry(_split(100, 0))
    async with _client(consul) as client:

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            mesh = await client.get("http://api/echo")
            outside = await client.get(f"http://127.0.0.1:{ups['a'].port}/echo")
            body = json.dumps(
                {
                    "upstream": mesh.headers["x-upstream"],
                    "mesh_saw": mesh.json()["headers"].get("mesh-override"),
                    "outside_saw": outside.json()["headers"].get("mesh-override"),
                }
            ).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

        async def ask(propagate: bool) -> dict[str, object]:
            wrapped = meshlib.MeshASGIMiddleware(app, propagate_override=propagate)
            transport = httpx.ASGITransport(app=wrapped)
            async with httpx.AsyncClient(transport=transport, base_url="http://inbound") as h:
                r = await h.get("/", headers={"Mesh-Override": "api=v2"})
                return r.json()  # type: ignore[no-any-return]

        on = await ask(True)
        off = await ask(False)
    assert on == {"upstream": "c", "mesh_saw": "api=v2", "outside_saw": None}
    assert off["upstream"] in ("a", "b")
    assert off["mesh_saw"] is None


async def test_an_override_to_a_subset_the_chain_does_not_reach_fails_clearly(
    consul: FakeConsul,
) -> None:
    consul.set_config_entry(_split(100, 0))
    async with _client(consul) as client:
        with pytest.raises(meshlib.NoEndpointsAvailable, match="known subsets: v1, v2"):
            await client.get("http://api/x", extensions={"mesh_override": {"api": "gold"}})


def test_resolve_prints_the_routes_split_and_subsets_in_force(
    fake_consul_env: FakeConsul, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshlib.cli import main

    for i, version in enumerate(("v1", "v2")):
        fake_consul_env.register_service(
            "api",
            service_id=f"api-{i}",
            address="127.0.0.1",
            port=8001 + i,
            meta={"version": version},
        )
    fake_consul_env.set_config_entry(RESOLVER)
    fake_consul_env.set_config_entry(_split(90, 10))
    fake_consul_env.set_config_entry(
        {
            "Kind": "service-router",
            "Name": "api",
            "Routes": [
                {"Match": {"HTTP": {"PathPrefix": "/beta"}}, "Destination": {"ServiceSubset": "v2"}}
            ],
        }
    )
    monkeypatch.setenv("MESH_DISCOVERY", "consul")
    assert main(["resolve", "api"]) == 0
    out = capsys.readouterr().out
    assert "2 endpoint(s)" in out
    assert "0: {'path_prefix': '/beta'} -> v2.api.default.default.dc1" in out
    assert "1: everything -> 90% v1.api.default.default.dc1, 10% v2.api.default.default.dc1" in out
    assert (
        "v2.api.default.default.dc1 filter 'Service.Meta.version == v2': "
        "1 endpoint(s) 127.0.0.1:8002" in out
    )


async def test_a_metadata_change_moves_an_instance_between_subsets(
    consul: FakeConsul, ups: dict[str, Upstream]
) -> None:
    consul.set_config_entry(_split(0, 100))
    async with _client(consul) as client:
        assert await _who(client, 5) == Counter({"c": 5})
        # b becomes a v2 instance: same address and port, new Service.Meta
        consul.register_service(
            "api",
            service_id="api-b",
            address="127.0.0.1",
            port=ups["b"].port,
            meta={"version": "v2"},
        )

        async def moved() -> bool:
            return set(await _who(client, 10)) == {"b", "c"}

        await _until(moved)


async def test_a_chain_watch_stops_with_its_idle_service(consul: FakeConsul) -> None:
    from meshlib.clock import ManualClock

    clock = ManualClock()
    d = meshlib.ConsulDiscovery(
        meshlib.ConsulSettings(host="127.0.0.1", port=consul.port),
        meshlib.ConsulOptions(idle_timeout=10.0),
        clock=clock,
    )
    try:
        await d.resolve(Target("api"))
        assert await d.resolve_chain(Target("api")) is not None
        assert set(d.traffic_state()) == {"api"}
        clock.advance(60.0)  # nobody used api for a minute: both watches stop on their next wake
        consul.register_service("api", service_id="api-z", address="127.0.0.1", port=9)
        consul.set_config_entry(_split(50, 50))

        async def stopped() -> bool:
            return not d.traffic_state() and not d.watch_state()

        await _until(stopped)
    finally:
        d.close()
