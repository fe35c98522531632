"""Traffic management without Consul: subsets and splits declared in the static file."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

import meshlib
from meshlib.discovery.base import Target
from meshlib.errors import ConfigError
from meshlib.upstream import Upstream


def _file(tmp: Path, ups: list[Upstream], entries: list[dict[str, object]]) -> Path:
    path = tmp / "mesh.json"
    path.write_text(
        json.dumps(
            {
                "api": [
                    {"address": f"127.0.0.1:{ups[0].port}", "meta": {"version": "v1"}},
                    {"address": f"127.0.0.1:{ups[1].port}", "meta": {"version": "v1"}},
                    {"address": f"127.0.0.1:{ups[2].port}", "tags": ["canary"]},
                ],
                "config_entries": entries,
            }
        )
    )
    return path


RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "DefaultSubset": "stable",
    "Subsets": {
        "stable": {"Filter": "Service.Meta.version == v1"},
        "canary": {"Filter": "canary in Service.Tags"},
    },
}
SPLIT = {
    "Kind": "service-splitter",
    "Name": "api",
    "Splits": [
        {"Weight": 80, "ServiceSubset": "stable"},
        {"Weight": 20, "ServiceSubset": "canary"},
    ],
}


async def test_a_static_file_splits_between_subsets_and_routes_by_header(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    router = {
        "Kind": "service-router",
        "Name": "api",
        "Routes": [
            {
                "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Present": True}]}},
                "Destination": {"ServiceSubset": "canary"},
            }
        ],
    }
    d = meshlib.StaticDiscovery(file=_file(tmp_path, upstreams, [RESOLVER, SPLIT, router]))
    async with meshlib.AsyncMeshClient(discovery=d, rng=random.Random(5)) as client:
        seen = Counter()
        for _ in range(200):
            seen[(await client.get("http://api/")).headers["x-upstream"]] += 1
        header = {
            (await client.get("http://api/", headers={"x-canary": "1"})).headers["x-upstream"]
            for _ in range(10)
        }
        routes = client.mesh_state()["traffic"]["api"]["chain"]["routes"]
    assert 0.12 <= seen["c"] / 200 <= 0.28, seen
    assert seen["a"]
    assert seen["b"]
    assert header == {"c"}
    assert len(routes) == 2
    chain = d.chain(Target("api"))
    assert chain is not None
    rng = random.Random(9)
    draws = Counter(
        chain.choose("GET", "/", {}, {}, rng.random()).target.subset for _ in range(10_000)
    )
    assert abs(draws["canary"] / 10_000 - 0.20) <= 0.01


def test_bad_entries_in_the_file_fail_at_start_naming_the_entry(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    bad = {**SPLIT, "Splits": [{"Weight": 80}]}
    with pytest.raises(ConfigError, match=r"config_entries\[1\]: the sum of all split weights"):
        meshlib.StaticDiscovery(file=_file(tmp_path, upstreams, [RESOLVER, bad]))
    missing = {**SPLIT, "Splits": [{"Weight": 100, "ServiceSubset": "gold"}]}
    with pytest.raises(ConfigError, match='does not have a subset named "gold"'):
        meshlib.StaticDiscovery(file=_file(tmp_path, upstreams, [RESOLVER, missing]))
    node_filter = {**RESOLVER, "Subsets": {"stable": {"Filter": "Node.Node == n1"}}}
    with pytest.raises(ConfigError, match="Bad Subset"):
        meshlib.StaticDiscovery(file=_file(tmp_path, upstreams, [node_filter]))


async def test_entries_can_be_given_in_code_and_redirect_a_name(upstreams: list[Upstream]) -> None:
    d = meshlib.StaticDiscovery(
        {"api": [f"127.0.0.1:{upstreams[1].port}"]},
        config_entries=[
            {"Kind": "service-resolver", "Name": "old-api", "Redirect": {"Service": "api"}}
        ],
    )
    async with meshlib.AsyncMeshClient(discovery=d) as client:
        r = await client.get("http://old-api/")
    assert r.headers["x-upstream"] == "b"


async def test_a_resolvers_round_robin_policy_is_honoured(upstreams: list[Upstream]) -> None:
    d = meshlib.StaticDiscovery(
        {"api": [f"127.0.0.1:{u.port}" for u in upstreams]},
        config_entries=[
            {"Kind": "service-resolver", "Name": "api", "LoadBalancer": {"Policy": "round_robin"}}
        ],
    )
    async with meshlib.AsyncMeshClient(discovery=d) as client:
        seen = [(await client.get("http://api/")).headers["x-upstream"] for _ in range(9)]
        problems = client.mesh_state()["traffic"]["api"]["chain"]["problems"]
    assert Counter(seen) == {"a": 3, "b": 3, "c": 3}  # strictly in turn, unlike P2C
    assert seen[:3] == seen[3:6] == seen[6:]
    assert problems == []
