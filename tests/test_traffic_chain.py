"""The discovery chain as meshlib reads it: route matching, split shares, problems, overrides."""

import random
from collections import Counter

import httpx
import pytest

from meshlib.routing.chains import parse_override
from meshlib.traffic import EntryError, compile_chain, parse_chain, validate_entry

RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"},
        "v2": {"Filter": "v2 in Service.Tags"},
    },
}


def _chain(*entries: dict[str, object]):  # type: ignore[no-untyped-def]
    table = {(e["Kind"], e["Name"]): e for e in (RESOLVER, *entries)}
    chain = parse_chain(
        compile_chain("api", datacenter="dc1", lookup=lambda k, n: table.get((k, n)))
    )
    assert chain is not None
    return chain


def _router(*routes: dict[str, object]) -> dict[str, object]:
    return {"Kind": "service-router", "Name": "api", "Routes": list(routes)}


def _to(subset: str, **http: object) -> dict[str, object]:
    return {"Match": {"HTTP": http}, "Destination": {"ServiceSubset": subset}}


def _pick(chain, method="GET", path="/", headers=None, query=None):  # type: ignore[no-untyped-def]
    h = httpx.Headers(headers or {})
    q = httpx.QueryParams(query or {})
    return chain.choose(method, path, h, q, 0.5).target.subset


def test_path_matches_are_exact_prefix_and_whole_path_regex() -> None:
    chain = _chain(
        _router(
            _to("v1", PathExact="/exact"),
            _to("v2", PathPrefix="/pre"),
            _to("v1", PathRegex="/item/[0-9]+"),
        )
    )
    assert _pick(chain, path="/exact") == "v1"
    assert _pick(chain, path="/exact/more") is None  # falls to the default route
    assert _pick(chain, path="/prefix/x") == "v2"
    assert _pick(chain, path="/item/42") == "v1"
    assert _pick(chain, path="/item/42/x") is None  # a regex must match the whole path


def test_header_query_and_method_matches() -> None:
    chain = _chain(
        _router(
            _to("v2", Header=[{"Name": "x-user", "Suffix": "@example.com"}]),
            _to(
                "v2", Header=[{"Name": "x-beta", "Present": True, "Invert": True}], Methods=["POST"]
            ),
            _to("v1", QueryParam=[{"Name": "canary", "Regex": "on|yes"}]),
        )
    )
    assert _pick(chain, headers={"X-User": "ann@example.com"}) == "v2"  # names ignore case
    assert _pick(chain, method="POST") == "v2"  # inverted: no x-beta header
    assert _pick(chain, method="POST", headers={"x-beta": "1"}) is None
    assert _pick(chain, query={"canary": "yes"}) == "v1"
    assert _pick(chain, query={"canary": "yess"}) is None


def test_a_split_share_is_within_one_point_over_ten_thousand_draws() -> None:
    split = {
        "Kind": "service-splitter",
        "Name": "api",
        "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}],
    }
    chain = _chain(split)
    rng = random.Random(2026)
    seen = Counter(
        chain.choose("GET", "/", {}, {}, rng.random()).target.subset for _ in range(10_000)
    )
    assert abs(seen["v2"] / 10_000 - 0.10) <= 0.01
    # the same seed gives the same sequence: tests are deterministic
    again = random.Random(2026)
    assert (
        chain.choose("GET", "/", {}, {}, again.random()).target.subset
        == chain.choose("GET", "/", {}, {}, random.Random(2026).random()).target.subset
    )


def test_unsupported_features_become_problems_and_the_rest_is_kept() -> None:
    chain = _chain(
        _router(
            {
                "Match": {"HTTP": {"PathPrefix": "/a"}},
                "Destination": {"ServiceSubset": "v2", "RequestHeaders": {"Add": {"x": "1"}}},
            },
            _to("v2", PathPrefix="/b"),
        ),
        {**RESOLVER, "LoadBalancer": {"Policy": "maglev", "HashPolicies": [{"Field": "header"}]}},
    )
    assert len(chain.routes) == 2  # the /b route and the default; the /a route is dropped
    assert _pick(chain, path="/a") is None
    assert _pick(chain, path="/b") == "v2"
    assert any("RequestHeaders" in p for p in chain.problems)
    assert any("maglev" in p for p in chain.problems)


def test_a_subset_filter_meshlib_cannot_evaluate_matches_nothing_and_is_reported() -> None:
    resolver = {
        **RESOLVER,
        "Subsets": {"v1": {"Filter": "Node.Node == n1"}},
        "DefaultSubset": "v1",
    }
    table = {("service-resolver", "api"): resolver}
    chain = parse_chain(
        compile_chain("api", datacenter="dc1", lookup=lambda k, n: table.get((k, n)))
    )
    assert chain is not None
    target = chain.start
    assert target.refused  # type: ignore[union-attr]
    assert any("Node.Node" in p for p in chain.problems)


def test_entries_are_validated_with_a_reason() -> None:
    with pytest.raises(EntryError, match="DefaultSubset"):
        validate_entry({**RESOLVER, "DefaultSubset": "nope"})
    with pytest.raises(EntryError, match="at most one of"):
        validate_entry(_router({"Match": {"HTTP": {"PathExact": "/a", "PathPrefix": "/a"}}}))
    with pytest.raises(EntryError, match="not a valid service name"):
        validate_entry({"Kind": "service-resolver", "Name": "../kv"})


def test_override_values_parse_and_bad_ones_say_how_to_fix_them() -> None:
    assert parse_override("users=canary, Orders=v2") == {"users": "canary", "orders": "v2"}
    assert parse_override({"users": "canary"}) == {"users": "canary"}
    with pytest.raises(ValueError, match="<service>=<subset>"):
        parse_override("canary")


def test_the_router_reads_path_headers_and_query_from_the_request() -> None:
    import meshlib
    from meshlib.discovery.base import Target

    entries = [
        RESOLVER,
        _router(
            _to("v2", QueryParam=[{"Name": "beta", "Exact": "1"}]),
            _to("v2", PathRegex="/a%20b"),
            _to("v1", Header=[{"Name": "X-Team", "Prefix": "pay"}]),
        ),
    ]
    d = meshlib.StaticDiscovery({"api": ["127.0.0.1:9"]}, config_entries=entries)
    mesh = meshlib.AsyncMeshTransport(discovery=d)
    chain = mesh.router.chain(Target("api"))
    assert chain is not None

    def subset(url: str, **headers: str) -> str | None:
        req = httpx.Request("GET", url, headers=headers)
        return mesh.router.chains.choose(chain, req).target.subset

    assert subset("http://api/x?beta=1") == "v2"
    assert subset("http://api/x?beta=2") is None
    assert subset("http://api/a%20b") == "v2"  # the path as sent, percent-encoding kept
    assert subset("http://api/x", **{"X-Team": "payments"}) == "v1"  # names ignore case
    assert subset("http://api/x", **{"Mesh-Override": "api=v2"}) == "v2"


def test_failover_to_other_datacenters_names_targets_there() -> None:
    resolver = {
        "Kind": "service-resolver",
        "Name": "api",
        "Failover": {"*": {"Datacenters": ["dc2", "dc3"]}},
        "ConnectTimeout": "1500ms",
    }
    table = {("service-resolver", "api"): resolver}
    chain = parse_chain(
        compile_chain("api", datacenter="dc1", lookup=lambda k, n: table.get((k, n)))
    )
    assert chain is not None
    primary = chain.start
    assert primary.dc is None  # type: ignore[union-attr]
    assert primary.connect_timeout == 1.5  # type: ignore[union-attr]
    assert [(t.service, t.dc) for t in primary.failover] == [("api", "dc2"), ("api", "dc3")]  # type: ignore[union-attr]

    from meshlib.discovery.base import Target
    from meshlib.routing.chains import Chains

    assert Chains.base_target(primary.failover[0]) == Target("api", dc="dc2")  # type: ignore[union-attr]
