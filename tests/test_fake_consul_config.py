"""FakeConsul's config entries and compiled discovery chain, over HTTP, in Consul's shapes."""

import threading

import httpx
import pytest

from meshlib.testing import FakeConsul
from meshlib.traffic import compile_chain, parse_chain

RESOLVER = {
    "Kind": "service-resolver",
    "Name": "api",
    "DefaultSubset": "v1",
    "Subsets": {
        "v1": {"Filter": "Service.Meta.version == v1"},
        "v2": {"Filter": "Service.Meta.version == v2"},
    },
    "Failover": {"v2": {"ServiceSubset": "v1"}},
    "ConnectTimeout": "2s",
}
SPLITTER = {
    "Kind": "service-splitter",
    "Name": "api",
    "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}],
}
ROUTER = {
    "Kind": "service-router",
    "Name": "api",
    "Routes": [
        {
            "Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
            "Destination": {"ServiceSubset": "v2", "RequestTimeout": "1s", "NumRetries": 1},
        }
    ],
}


@pytest.fixture
def consul() -> FakeConsul:
    with FakeConsul() as c:
        yield c


def _http(c: FakeConsul) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{c.port}", timeout=5)


def test_entries_are_stored_listed_read_and_deleted_with_indexes(consul: FakeConsul) -> None:
    with _http(consul) as h:
        assert h.put("/v1/config", json=RESOLVER).json() is True
        got = h.get("/v1/config/service-resolver/api")
        assert got.status_code == 200
        body = got.json()
        assert body["DefaultSubset"] == "v1"
        assert body["CreateIndex"] == body["ModifyIndex"] == int(got.headers["X-Consul-Index"])
        assert [e["Name"] for e in h.get("/v1/config/service-resolver").json()] == ["api"]
        # check-and-set: a stale index loses, the current one wins
        assert (
            h.put("/v1/config", params={"cas": 1}, json={**RESOLVER, "ConnectTimeout": "3s"}).json()
            is False
        )
        cur = body["ModifyIndex"]
        assert (
            h.put(
                "/v1/config", params={"cas": cur}, json={**RESOLVER, "ConnectTimeout": "3s"}
            ).json()
            is True
        )
        assert h.delete("/v1/config/service-resolver/api").json() == {}
        missing = h.get("/v1/config/service-resolver/api")
        assert missing.status_code == 404
        assert missing.text == 'Config entry not found for "service-resolver" / "api"'
        assert "X-Consul-Index" in missing.headers


def test_bad_entries_are_refused_with_the_reason(consul: FakeConsul) -> None:
    with _http(consul) as h:
        bad_split = {**SPLITTER, "Splits": [{"Weight": 90}, {"Weight": 20, "ServiceSubset": "x"}]}
        r = h.put("/v1/config", json=bad_split)
        assert r.status_code == 400
        assert "sum of all split weights must be 100" in r.text
        r = h.put(
            "/v1/config", json={**RESOLVER, "Subsets": {"v1": {"Filter": "Service.Nope == 1"}}}
        )
        assert r.status_code == 400
        assert "Bad Subset" in r.text
        r = h.put("/v1/config", json={"Kind": "service-nonsense", "Name": "api"})
        assert r.status_code == 400
        assert "invalid config entry kind" in r.text
        assert h.get("/v1/config/service-nonsense").status_code == 400


def test_chain_is_compiled_in_consuls_shape(consul: FakeConsul) -> None:
    with _http(consul) as h:
        plain = h.get("/v1/discovery-chain/api").json()["Chain"]
        assert plain["Default"] is True
        assert plain["StartNode"] == "resolver:api.default.default.dc1"
        for entry in (RESOLVER, SPLITTER, ROUTER):
            h.put("/v1/config", json=entry)
        chain = h.get("/v1/discovery-chain/api").json()["Chain"]
    assert chain["Default"] is False
    assert chain["Protocol"] == "http"
    assert chain["StartNode"] == "router:api.default.default"
    routes = chain["Nodes"]["router:api.default.default"]["Routes"]
    assert [r["NextNode"] for r in routes] == [
        "resolver:v2.api.default.default.dc1",
        "splitter:api.default.default",
    ]
    assert routes[-1]["Definition"]["Match"] == {"HTTP": {"PathPrefix": "/"}}
    splits = chain["Nodes"]["splitter:api.default.default"]["Splits"]
    assert [(s["Weight"], s["NextNode"]) for s in splits] == [
        (90, "resolver:v1.api.default.default.dc1"),
        (10, "resolver:v2.api.default.default.dc1"),
    ]
    v2 = chain["Nodes"]["resolver:v2.api.default.default.dc1"]["Resolver"]
    assert v2["Failover"] == {"Targets": ["v1.api.default.default.dc1"]}
    assert v2["ConnectTimeout"] == "2s"
    target = chain["Targets"]["v2.api.default.default.dc1"]
    assert target["Subset"] == {"Filter": "Service.Meta.version == v2", "OnlyPassing": False}
    assert target["ServiceSubset"] == "v2"
    assert target["Datacenter"] == "dc1"


def test_chain_read_blocks_until_a_config_write(consul: FakeConsul) -> None:
    with _http(consul) as h:
        first = h.get("/v1/discovery-chain/api")
        index = first.headers["X-Consul-Index"]
        out: dict[str, httpx.Response] = {}

        def wait() -> None:
            with _http(consul) as h2:
                out["r"] = h2.get("/v1/discovery-chain/api", params={"index": index, "wait": "5s"})

        t = threading.Thread(target=wait)
        t.start()
        consul.wait_for_blocking_queries(1)
        consul.set_config_entry(SPLITTER | {"Splits": [{"Weight": 100}]})
        t.join(timeout=10)
    assert int(out["r"].headers["X-Consul-Index"]) > int(index)
    assert out["r"].json()["Chain"]["StartNode"] == "splitter:api.default.default"


def test_redirect_and_nested_splits_compile_like_consul() -> None:
    entries = {
        ("service-resolver", "legacy"): {
            "Kind": "service-resolver",
            "Name": "legacy",
            "Redirect": {"Service": "api"},
        },
        ("service-splitter", "web"): {
            "Kind": "service-splitter",
            "Name": "web",
            "Splits": [{"Weight": 50, "Service": "api"}, {"Weight": 50, "Service": "legacy"}],
        },
        ("service-splitter", "api"): {
            "Kind": "service-splitter",
            "Name": "api",
            "Splits": [{"Weight": 80, "Service": "api"}, {"Weight": 20, "Service": "api-next"}],
        },
    }
    chain = compile_chain("web", datacenter="dc1", lookup=lambda k, n: entries.get((k, n)))
    splits = chain["Nodes"]["splitter:web.default.default"]["Splits"]
    assert [(s["Weight"], s["NextNode"]) for s in splits] == [
        (40, "resolver:api.default.default.dc1"),
        (10, "resolver:api-next.default.default.dc1"),
        (50, "resolver:api.default.default.dc1"),
    ]
    parsed = parse_chain({"Chain": chain})
    assert parsed is not None
    shares: dict[str, float] = {}
    for i in range(1000):
        t = parsed.choose("GET", "/", {}, {}, i / 1000).target
        shares[t.service] = shares.get(t.service, 0) + 1
    assert shares == {"api": 900, "api-next": 100}


def test_an_entry_read_blocks_until_a_config_write(consul: FakeConsul) -> None:
    with _http(consul) as h:
        h.put("/v1/config", json=RESOLVER)
        first = h.get("/v1/config/service-resolver/api")
        index = first.headers["X-Consul-Index"]
        out: dict[str, httpx.Response] = {}

        def wait() -> None:
            with _http(consul) as h2:
                out["r"] = h2.get(
                    "/v1/config/service-resolver/api", params={"index": index, "wait": "5s"}
                )

        t = threading.Thread(target=wait)
        t.start()
        consul.wait_for_blocking_queries(1)
        h.put("/v1/config", json={**RESOLVER, "ConnectTimeout": "9s"})
        t.join(timeout=10)
    assert out["r"].json()["ConnectTimeout"] == "9s"
    assert int(out["r"].headers["X-Consul-Index"]) > int(index)
