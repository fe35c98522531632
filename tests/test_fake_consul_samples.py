"""FakeConsul answers field by field like the Consul samples in tests/data/consul-api.

Each test registers what a sample describes, reads it back over HTTP and compares every key
the sample shows. Deliberate differences, each asserted or excluded explicitly below:

* Raft indexes (``CreateIndex``/``ModifyIndex``) and node IDs are FakeConsul's own.
* ``Namespace`` is Enterprise-only; FakeConsul emulates OSS and omits it.
* ``TaggedAddresses`` inside services use ``Address``/``Port`` as the agent emits them (the docs
  samples show lowercase keys); they are compared case-insensitively.
* The agent adds ``lan_ipv4``/``wan_ipv4`` tagged addresses for IPv4 literals, and its node
  carries ``lan_ipv4``/``wan_ipv4`` and ``consul-*`` meta; samples are checked as a subset.
* ``serfHealth`` says ``Agent alive and reachable`` like a real agent; the docs show ``""``.
* The docs' ``ID`` on ``/v1/health/node`` checks is not a ``HealthCheck`` field; not emitted.
* Node checks come before service checks in a health entry (Consul's state store order); the
  docs sample lists them the other way round, so checks are compared by ``CheckID``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul

DATA = Path(__file__).parent / "data" / "consul-api"
ENTERPRISE_ONLY = {"Namespace"}


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.lower(): lower_keys(v) for k, v in value.items()}
    return value


def assert_fields(actual: dict[str, Any], expected: dict[str, Any], skip: set[str]) -> None:
    """Every key of ``expected`` (bar ``skip``) is present in ``actual`` with the same value."""
    for key, value in expected.items():
        if key in skip:
            continue
        assert key in actual, f"missing {key}"
        assert actual[key] == value, f"{key}: {actual[key]!r} != {value!r}"


@pytest.fixture
def foobar() -> Iterator[FakeConsul]:
    """An agent named like the docs' node, so Node fields compare as-is.

    Checks are not run: the docs' samples point HTTP checks at example.com, and tests stay on
    127.0.0.1.
    """
    with FakeConsul(
        node_name="foobar",
        node_address="10.1.10.12",
        node_meta={"instance_type": "t2.medium"},
        run_checks=False,
    ) as consul:
        yield consul


@pytest.fixture
def http(foobar: FakeConsul) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=foobar.url) as client:
        yield client


def register_redis(http: httpx.Client) -> None:
    """The service the health samples describe: redis with tag primary and a passing check."""
    body = {
        "ID": "redis",
        "Name": "redis",
        "Tags": ["primary"],
        "Address": "10.1.10.12",
        "Port": 8000,
        "Meta": {"redis_version": "4.0"},
        "TaggedAddresses": {
            "lan": {"address": "10.1.10.12", "port": 8000},
            "wan": {"address": "198.18.1.2", "port": 80},
        },
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": {"TTL": "30s", "Status": "passing"},
    }
    assert http.put("/v1/agent/service/register", json=body).status_code == 200


def test_agent_service_register_sample(http: httpx.Client) -> None:
    spec = sample("agent-service-register.json")
    req = spec["request"]
    r = http.request(req["method"], req["path"], params=req["query"], json=req["body"])
    assert r.status_code == spec["response_status"]
    assert r.text == spec["response_body"]
    got = http.get("/v1/agent/service/redis1").json()
    body = req["body"]
    assert got["ID"] == body["ID"]
    assert got["Service"] == body["Name"]
    for key in ("Tags", "Address", "Port", "Meta", "EnableTagOverride", "Weights"):
        assert got[key] == body[key], key
    # The agent's automatic tagged addresses for an IPv4 literal (a deliberate addition).
    assert got["TaggedAddresses"] == {
        "lan_ipv4": {"Address": "127.0.0.1", "Port": 8000},
        "wan_ipv4": {"Address": "127.0.0.1", "Port": 8000},
    }
    assert "ContentHash" in got
    check = http.get("/v1/agent/checks").json()["service:redis1"]
    assert check["Name"] == "Service 'redis' check"
    assert check["Type"] == "script"
    assert check["Status"] == "critical"
    assert check["Interval"] == "10s"
    assert check["Timeout"] == "5s"
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "1h30m0s"


def test_py_consul_wire_example_decodes_lowercase_keys(http: httpx.Client) -> None:
    body = sample("agent-service-register.json")["py_consul_wire_example"]["body"]
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    svc = http.get("/v1/agent/services").json()["foo:1"]
    assert (svc["Service"], svc["Tags"]) == ("foo", ["tag:foo:1"])
    check = http.get("/v1/agent/checks").json()["service:foo:1"]
    assert (check["Type"], check["Status"], check["ServiceID"]) == ("ttl", "critical", "foo:1")


def test_agent_services_sample(http: httpx.Client) -> None:
    spec = sample("agent-services.json")
    expected = spec["response_body"]["redis"]
    body = {
        "ID": "redis",
        "Name": "redis",
        "Tags": expected["Tags"],
        "TaggedAddresses": expected["TaggedAddresses"],
        "Meta": expected["Meta"],
        "Port": expected["Port"],
        "Address": expected["Address"],
        "Weights": expected["Weights"],
    }
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    got = http.get(spec["request"]["path"]).json()["redis"]
    assert_fields(got, expected, skip=ENTERPRISE_ONLY | {"TaggedAddresses"})
    assert lower_keys(got["TaggedAddresses"]) == lower_keys(expected["TaggedAddresses"])


def test_agent_services_observed_minimal_registration_is_exact(http: httpx.Client) -> None:
    observed = sample("agent-services.json")["observed_minimal_registration"]["response_body"]
    assert http.put("/v1/agent/service/register", json={"name": "foo"}).status_code == 200
    assert http.get("/v1/agent/services").json() == observed


def test_agent_services_observed_tagged_addresses_are_capitalised(http: httpx.Client) -> None:
    spec = sample("agent-services.json")["observed_tagged_addresses"]
    body = {"name": "foo", **spec["request_body_fragment"]}
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    got = http.get("/v1/agent/services").json()["foo"]["TaggedAddresses"]
    assert got == spec["response_TaggedAddresses"]


def test_agent_checks_sample(http: httpx.Client) -> None:
    spec = sample("agent-checks.json")
    body = {"Name": "redis", "Tags": ["primary"], "Check": {"TTL": "10s", "Status": "passing"}}
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    got = http.get(spec["request"]["path"]).json()
    assert set(got) == set(spec["response_body"])
    assert_fields(got["service:redis"], spec["response_body"]["service:redis"], set())


def test_agent_check_register_sample(http: httpx.Client) -> None:
    spec = sample("agent-check-register.json")
    req = spec["request"]
    r = http.request(req["method"], req["path"], json=req["body"])
    assert (r.status_code, r.text) == (spec["response_status"], spec["response_body"])
    check = http.get("/v1/agent/checks").json()["mem"]
    body = req["body"]
    assert (check["Name"], check["Notes"]) == (body["Name"], body["Notes"])
    assert check["Type"] == "http"  # HTTP wins when a definition names several kinds
    assert check["Status"] == "critical"
    definition = check["Definition"]
    for key in ("HTTP", "Method", "Header", "Body", "TCP", "TLSSkipVerify"):
        assert definition[key] == body[key], key
    assert (definition["Interval"], definition["Timeout"]) == ("10s", "5s")
    assert definition["DeregisterCriticalServiceAfter"] == "1h30m0s"


def test_agent_check_ttl_sample(http: httpx.Client) -> None:
    spec = sample("agent-check-ttl.json")
    body = {"ID": "my-check-id", "Name": "my check", "TTL": "30s"}
    assert http.put("/v1/agent/check/register", json=body).status_code == 200
    expected_status = {"pass": "passing", "warn": "warning", "fail": "critical"}
    for req in spec["requests"]:
        verb = req["path"].split("/")[4]
        r = http.request(req["method"], req["path"], params=req.get("query"), json=req.get("body"))
        assert (r.status_code, r.text) == (spec["response_status"], spec["response_body"])
        check = http.get("/v1/agent/checks").json()["my-check-id"]
        if verb == "update":
            assert (check["Status"], check["Output"]) == (
                req["body"]["Status"],
                req["body"]["Output"],
            )
        else:
            assert check["Status"] == expected_status[verb]
            assert check["Output"] == req["query"]["note"]  # the note becomes Output, not Notes
            assert check["Notes"] == ""
    bad = http.put("/v1/agent/check/update/my-check-id", json={"Status": "ok"})
    assert (bad.status_code, bad.text) == (400, "Invalid check status: 'ok'")
    broken = http.put("/v1/agent/check/update/my-check-id", content=b"{not json")
    assert broken.status_code == spec["errors"]["update_bad_json"]["status"]
    assert broken.text.startswith("Request decode failed: ")


def test_agent_health_service_name_sample(http: httpx.Client) -> None:
    spec = sample("agent-health-service-name.json")
    expected = spec["response_body"]
    for entry in expected:
        svc = entry["Service"]
        body = {
            "ID": svc["ID"],
            "Name": svc["Service"],
            "Tags": svc["Tags"],
            "Port": svc["Port"],
            "TaggedAddresses": svc["TaggedAddresses"],
        }
        if entry["Checks"]:
            body["Check"] = {"TTL": "30s"}
        assert http.put("/v1/agent/service/register", json=body).status_code == 200
    output = expected[1]["Checks"][0]["Output"]
    assert http.put("/v1/agent/check/fail/service:web2", params={"note": output}).status_code == 200
    r = http.get(spec["request"]["path"])
    assert r.status_code == spec["response_status"]
    got = r.json()
    assert [e["AggregatedStatus"] for e in got] == [e["AggregatedStatus"] for e in expected]
    for mine, theirs in zip(got, expected, strict=True):
        # SocketPath is omitempty on Consul 1.20+ (see observed_minimal_registration).
        assert_fields(mine["Service"], theirs["Service"], skip=ENTERPRISE_ONLY | {"SocketPath"})
        assert len(mine["Checks"]) == len(theirs["Checks"])
    check, docs_check = got[1]["Checks"][0], expected[1]["Checks"][0]
    # The agent-health endpoints copy only identity and status into api.HealthCheck, so Type
    # is "" and Definition is zero-valued whatever the check is (ours is a TTL check).
    assert_fields(check, docs_check, skip=ENTERPRISE_ONLY | {"Node"})
    assert check["Node"] == "foobar"
    text = http.get(spec["request"]["path"], params={"format": "text"})
    assert (text.status_code, text.text) == (503, spec["text_format"]["body"])


def test_agent_health_status_codes(http: httpx.Client) -> None:
    codes = sample("agent-health-service-name.json")["status_codes"]
    body = {"Name": "api", "Check": {"TTL": "30s", "Status": "passing"}}
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    assert str(http.get("/v1/agent/health/service/name/api").status_code) in codes
    assert http.get("/v1/agent/health/service/name/api").status_code == 200
    http.put("/v1/agent/check/warn/service:api")
    assert http.get("/v1/agent/health/service/id/api").status_code == 429
    http.put("/v1/agent/check/fail/service:api")
    assert http.get("/v1/agent/health/service/id/api").status_code == 503
    http.put("/v1/agent/check/pass/service:api")
    http.put("/v1/agent/service/maintenance/api", params={"enable": "true"})
    r = http.get("/v1/agent/health/service/id/api")
    assert (r.status_code, r.json()["AggregatedStatus"]) == (503, "maintenance")
    missing = http.get("/v1/agent/health/service/name/nope")
    assert (missing.status_code, missing.json()) == (404, [])


def test_agent_service_maintenance_sample(http: httpx.Client) -> None:
    spec = sample("agent-service-maintenance.json")
    assert http.put("/v1/agent/service/register", json={"Name": "my-service-id"}).status_code == 200
    req = spec["request"]
    r = http.request(req["method"], req["path"], params=req["query"])
    assert (r.status_code, r.text) == (spec["response_status"], spec["response_body"])
    check = http.get("/v1/agent/checks").json()["_service_maintenance:my-service-id"]
    assert (check["Notes"], check["Status"]) == (req["query"]["reason"], "critical")
    assert check["Name"] == "Service Maintenance Mode"
    errors = spec["errors"]
    missing = http.put(req["path"])
    assert (missing.status_code, missing.text) == (400, errors["missing_enable"]["body"])
    bad = http.put(req["path"], params={"enable": "maybe"})
    assert (bad.status_code, bad.text) == (400, 'Invalid value for enable: "maybe"')
    empty = http.put("/v1/agent/service/maintenance/", params={"enable": "true"})
    assert (empty.status_code, empty.text) == (400, errors["empty_id"]["body"])
    unknown = http.put("/v1/agent/service/maintenance/nope", params={"enable": "true"})
    assert unknown.status_code == errors["unknown_service"]["status"]
    assert unknown.text == 'No service registered with ID "nope"'
    off = http.put(req["path"], params={"enable": "False"})
    assert off.status_code == 200
    assert "_service_maintenance:my-service-id" not in http.get("/v1/agent/checks").json()


def test_blocking_query_headers_sample(http: httpx.Client) -> None:
    spec = sample("blocking-query-headers.json")
    register_redis(http)
    http.put("/v1/agent/service/register", json={"Name": "web"})
    query = {**spec["request"]["query"], "index": "1"}
    r = http.get(spec["request"]["path"], params=query)
    assert r.status_code == 200
    for name, value in spec["response_headers"].items():
        assert name in r.headers, name
        if name != "X-Consul-Index":
            assert r.headers[name] == value, name
    assert int(r.headers["X-Consul-Index"]) > 1
    rules = spec["rules"]
    for params, rule in (
        ({"index": "1", "wait": "soon"}, rules["bad_wait"]),
        ({"index": "x"}, rules["bad_index"]),
        ({"stale": "", "consistent": ""}, rules["stale_and_consistent"]),
    ):
        bad = http.get(spec["request"]["path"], params=params)
        assert (bad.status_code, bad.text) == (rule["status"], rule["body"])
    seen = {
        http.get("/v1/health/service/web", params={mode: ""}).headers[
            "X-Consul-Effective-Consistency"
        ]
        for mode in ("stale", "consistent", "other")
    }
    assert seen == set(rules["effective_consistency_values"])


def test_catalog_nodes_sample(http: httpx.Client) -> None:
    spec = sample("catalog-nodes.json")
    for node in spec["response_body"]:
        body = {
            "ID": node["ID"],
            "Node": node["Node"],
            "Address": node["Address"],
            "Datacenter": node["Datacenter"],
            "TaggedAddresses": node["TaggedAddresses"],
            "NodeMeta": node["Meta"],
        }
        r = http.put("/v1/catalog/register", json=body)
        if node["Datacenter"] == "dc1":
            assert (r.status_code, r.json()) == (200, True)
        else:  # a single-datacenter agent has no WAN path to dc2, exactly like Consul
            assert (r.status_code, r.text) == (500, "No path to datacenter")
    got = {n["Node"]: n for n in http.get(spec["request"]["path"]).json()}
    assert set(got) == {"baz", "foobar"}
    assert_fields(got["baz"], spec["response_body"][0], set())


def test_catalog_service_sample(http: httpx.Client) -> None:
    spec = sample("catalog-service.json")
    e = spec["response_body"][0]
    body = {
        "ID": e["ID"],
        "Node": e["Node"],
        "Address": e["Address"],
        "TaggedAddresses": e["TaggedAddresses"],
        "NodeMeta": e["NodeMeta"],
        "Service": {
            "ID": e["ServiceID"],
            "Service": e["ServiceName"],
            "Tags": e["ServiceTags"],
            "Address": e["ServiceAddress"],
            "Port": e["ServicePort"],
            "Meta": e["ServiceMeta"],
            "TaggedAddresses": e["ServiceTaggedAddresses"],
            "EnableTagOverride": e["ServiceEnableTagOverride"],
        },
    }
    assert http.put("/v1/catalog/register", json=body).status_code == 200
    req = spec["request"]
    got = http.get(req["path"], params=req["query"]).json()
    assert len(got) == 1
    skip = ENTERPRISE_ONLY | {"CreateIndex", "ModifyIndex", "ServiceTaggedAddresses"}
    assert_fields(got[0], e, skip)
    assert lower_keys(got[0]["ServiceTaggedAddresses"]) == lower_keys(e["ServiceTaggedAddresses"])
    assert got[0]["CreateIndex"] == got[0]["ModifyIndex"] > 0
    assert (got[0]["ServiceKind"], got[0]["ServiceWeights"]) == ("", {"Passing": 1, "Warning": 1})


def test_catalog_services_sample(http: httpx.Client) -> None:
    spec = sample("catalog-services.json")
    http.put("/v1/agent/service/register", json={"Name": "redis"})
    for i, tag in enumerate(spec["response_body"]["postgresql"]):
        http.put(
            "/v1/agent/service/register", json={"Name": "postgresql", "ID": f"pg{i}", "Tags": [tag]}
        )
    http.put(
        "/v1/agent/service/register", json={"Name": "postgresql", "ID": "pg9", "Tags": ["primary"]}
    )
    assert http.get(spec["request"]["path"]).json() == spec["response_body"]


def test_health_checks_sample(http: httpx.Client) -> None:
    spec = sample("health-checks.json")
    register_redis(http)
    got = http.get("/v1/health/checks/redis").json()
    assert len(got) == len(spec["response_body"])
    assert_fields(got[0], spec["response_body"][0], ENTERPRISE_ONLY)


def test_health_node_sample(http: httpx.Client) -> None:
    spec = sample("health-node.json")
    register_redis(http)
    got = {c["CheckID"]: c for c in http.get("/v1/health/node/foobar").json()}
    assert set(got) == {c["CheckID"] for c in spec["response_body"]}
    for expected in spec["response_body"]:
        skip = (
            ENTERPRISE_ONLY
            | {"ID"}
            | ({"Output"} if expected["CheckID"] == "serfHealth" else set())
        )
        assert_fields(got[expected["CheckID"]], expected, skip)
    assert got["serfHealth"]["Output"] == "Agent alive and reachable"
    assert http.get("/v1/health/node/nope").json() == []


def test_health_service_sample(http: httpx.Client) -> None:
    spec = sample("health-service.json")
    register_redis(http)
    req = spec["request"]
    got = http.get("/v1/health/service/redis", params=req["query"]).json()
    assert len(got) == len(spec["response_body"])
    mine, theirs = got[0], spec["response_body"][0]
    node, docs_node = mine["Node"], theirs["Node"]
    assert_fields(node, docs_node, {"ID", "TaggedAddresses", "Meta"})
    assert docs_node["TaggedAddresses"].items() <= node["TaggedAddresses"].items()
    assert docs_node["Meta"].items() <= node["Meta"].items()
    svc, docs_svc = mine["Service"], theirs["Service"]
    assert_fields(svc, docs_svc, ENTERPRISE_ONLY | {"TaggedAddresses"})
    tagged = lower_keys(svc["TaggedAddresses"])
    assert lower_keys(docs_svc["TaggedAddresses"]).items() <= tagged.items()
    checks = {c["CheckID"]: c for c in mine["Checks"]}
    assert set(checks) == {c["CheckID"] for c in theirs["Checks"]}
    assert [c["CheckID"] for c in mine["Checks"]] == ["serfHealth", "service:redis"]
    for expected in theirs["Checks"]:
        skip = ENTERPRISE_ONLY | ({"Output"} if expected["CheckID"] == "serfHealth" else set())
        assert_fields(checks[expected["CheckID"]], expected, skip)


def test_health_state_sample(http: httpx.Client) -> None:
    spec = sample("health-state.json")
    register_redis(http)
    got = {c["CheckID"]: c for c in http.get(spec["request"]["path"]).json()}
    assert set(got) == {c["CheckID"] for c in spec["response_body"]}
    for expected in spec["response_body"]:
        skip = ENTERPRISE_ONLY | ({"Output"} if expected["CheckID"] == "serfHealth" else set())
        assert_fields(got[expected["CheckID"]], expected, skip)
    for state in spec["valid_states"]:
        assert http.get(f"/v1/health/state/{state}").status_code == 200
    unknown = http.get("/v1/health/state/sleepy")  # not validated by Consul either
    assert (unknown.status_code, unknown.json()) == (200, [])
