"""FakeConsul applies Consul's request rules: filters, ordering, decoding, errors and routing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul


@pytest.fixture
def server() -> Iterator[FakeConsul]:
    with FakeConsul() as fake:
        yield fake


@pytest.fixture
def http(server: FakeConsul) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        yield client


def ids(response: httpx.Response) -> list[str]:
    return [e["Service"]["ID"] for e in response.json()]


@pytest.fixture
def fleet(server: FakeConsul) -> FakeConsul:
    """web on three nodes with different tags, meta, ports and health."""
    server.register_node("n2", "10.0.0.2", meta={"rack": "r2", "env": "prod"})
    server.register_node("n1", "10.0.0.1", meta={"rack": "r1", "env": "prod"})
    server.register_service(
        "web", service_id="web-b", node="n1", port=8080, tags=["v2", "blue"], meta={"ver": "2"}
    )
    server.register_service(
        "web", service_id="web-a", node="n1", port=8081, tags=["v1"], meta={"ver": "1"}
    )
    server.register_service("web", service_id="web-c", node="n2", port=9090, tags=["v2", "Canary"])
    server.register_service("web", service_id="web-z", port=7070, tags=["v1"], ttl="30s")
    return server


def test_order_is_node_then_service_id(fleet: FakeConsul, http: httpx.Client) -> None:
    assert ids(http.get("/v1/health/service/web")) == ["web-z", "web-a", "web-b", "web-c"]
    catalog = http.get("/v1/catalog/service/web").json()
    assert [e["ServiceID"] for e in catalog] == ["web-z", "web-a", "web-b", "web-c"]
    assert [e["Node"] for e in catalog] == ["fake-node", "n1", "n1", "n2"]


def test_passing_excludes_warning_critical_and_node_checks(
    fleet: FakeConsul, http: httpx.Client
) -> None:
    # web-z's TTL check starts critical; instances without checks pass.
    assert ids(http.get("/v1/health/service/web", params={"passing": "1"})) == [
        "web-a",
        "web-b",
        "web-c",
    ]
    fleet.set_check_status("service:web-z", "passing")
    assert len(http.get("/v1/health/service/web?passing").json()) == 4
    assert len(http.get("/v1/health/service/web", params={"passing": "false"}).json()) == 4
    fleet.set_check_status("service:web-z", "warning")
    assert "web-z" not in ids(http.get("/v1/health/service/web?passing"))
    fleet.register_check("rack-power", node="n1", status="critical")  # a node-level check
    assert ids(http.get("/v1/health/service/web?passing")) == ["web-c"]
    fleet.set_check_status("rack-power", "passing", node="n1")
    assert ids(http.get("/v1/health/service/web?passing")) == ["web-a", "web-b", "web-c"]
    bad = http.get("/v1/health/service/web", params={"passing": "yes"})
    assert (bad.status_code, bad.text) == (400, "Invalid value for ?passing")


def test_tags_must_all_match_case_insensitively(fleet: FakeConsul, http: httpx.Client) -> None:
    assert ids(http.get("/v1/health/service/web", params={"tag": "v2"})) == ["web-b", "web-c"]
    both = http.get("/v1/health/service/web", params=[("tag", "v2"), ("tag", "blue")])
    assert ids(both) == ["web-b"]
    assert ids(http.get("/v1/health/service/web", params={"tag": "canary"})) == ["web-c"]
    catalog = http.get("/v1/catalog/service/web", params=[("tag", "v1")]).json()
    assert [e["ServiceID"] for e in catalog] == ["web-z", "web-a"]


def test_node_meta_must_all_match(fleet: FakeConsul, http: httpx.Client) -> None:
    r = http.get(
        "/v1/health/service/web", params=[("node-meta", "env:prod"), ("node-meta", "rack:r2")]
    )
    assert ids(r) == ["web-c"]
    nodes = http.get("/v1/catalog/nodes", params={"node-meta": "rack:r1"}).json()
    assert [n["Node"] for n in nodes] == ["n1"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Service.Port == 8080", ["web-b"]),
        ("Service.Port != 8080", ["web-z", "web-a", "web-c"]),
        ('"v2" in Service.Tags', ["web-b", "web-c"]),
        ('"v2" not in Service.Tags', ["web-z", "web-a"]),
        ("Service.Tags contains blue", ["web-b"]),
        ("Service.Tags not contains v1", ["web-b", "web-c"]),
        ('Service.ID matches "^web-[ab]$"', ["web-a", "web-b"]),
        ("Service.ID not matches `[ab]$`", ["web-z", "web-c"]),
        ("Service.Meta is empty", ["web-z", "web-c"]),
        ("Service.Meta is not empty", ["web-a", "web-b"]),
        ("Service.Meta.ver == `2`", ["web-b"]),
        ('"ver" in Service.Meta', ["web-a", "web-b"]),
        ('Node.Node == n1 and ("v2" in Service.Tags or Service.Port == 8081)', ["web-a", "web-b"]),
        ("not (Node.Node == n1) and Service.Tags is not empty", ["web-z", "web-c"]),
        ("Checks.Status == critical", ["web-z"]),
        ("Checks.Status != critical", ["web-a", "web-b", "web-c"]),
        ("Checks is empty", ["web-a", "web-b", "web-c"]),
        (
            "Service.Weights.Passing == 1 and Service.EnableTagOverride == false",
            ["web-z", "web-a", "web-b", "web-c"],
        ),
        ("Node.Node != ``", ["web-z", "web-a", "web-b", "web-c"]),
    ],
)
def test_health_filter_expressions(
    fleet: FakeConsul, http: httpx.Client, expression: str, expected: list[str]
) -> None:
    r = http.get("/v1/health/service/web", params={"filter": expression})
    assert r.status_code == 200, r.text
    assert ids(r) == expected


def test_filter_errors_are_400(fleet: FakeConsul, http: httpx.Client) -> None:
    bad = (
        "Service.Nope == 1",
        "Service.Port == abc",
        "Service.ID ==",
        "(a == b",
        "Service.Port > 1",
    )
    for expression in bad:
        r = http.get("/v1/health/service/web", params={"filter": expression})
        assert r.status_code == 400, expression
        assert r.text.startswith("Failed to create boolean expression evaluator: ")
    r = http.get("/v1/health/service/web", params={"filter": "Service.Nope == 1"})
    assert 'Selector "Service.Nope" is not valid' in r.text


def test_catalog_filters_use_service_node_selectors(fleet: FakeConsul, http: httpx.Client) -> None:
    r = http.get("/v1/catalog/service/web", params={"filter": '"Canary" in ServiceTags'})
    assert [e["ServiceID"] for e in r.json()] == ["web-c"]
    r = http.get("/v1/catalog/services", params={"filter": "NodeMeta.rack == r2"})
    assert r.json() == {"web": ["v2", "Canary"]}
    assert http.get("/v1/catalog/services").json() == {
        "consul": [],
        "web": ["v1", "v2", "blue", "Canary"],
    }
    r = http.get("/v1/agent/services", params={"filter": "Port == 7070"})
    assert list(r.json()) == ["web-z"]
    r = http.get("/v1/agent/checks", params={"filter": 'ServiceID == "web-z"'})
    assert list(r.json()) == ["service:web-z"]
    r = http.get("/v1/catalog/nodes", params={"filter": "Meta.rack == r2"})
    assert [n["Node"] for n in r.json()] == ["n2"]


def test_request_keys_case_insensitive_and_snake_case(http: httpx.Client) -> None:
    body = {
        "NAME": "api",
        "id": "api-1",
        "tags": ["x"],
        "PORT": 8000,
        "enable_tag_override": True,
        "tagged_addresses": {"lan": {"ADDRESS": "10.0.0.9", "port": 1}},
        "meta": {"Some_Key": "v"},
        "weights": {"passing": 5, "warning": 2},
        "checks": [
            {"name": "a", "ttl": "10s", "status": "passing"},
            {"script_args": ["x"], "interval": "1m"},
        ],
    }
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    svc = http.get("/v1/agent/service/api-1").json()
    assert (svc["Service"], svc["Port"], svc["EnableTagOverride"]) == ("api", 8000, True)
    assert svc["Meta"] == {"Some_Key": "v"}  # map keys are data, not field names
    assert svc["Weights"] == {"Passing": 5, "Warning": 2}
    assert svc["TaggedAddresses"] == {"lan": {"Address": "10.0.0.9", "Port": 1}}
    checks = http.get("/v1/agent/checks").json()
    assert checks["service:api-1:1"]["Name"] == "a"
    assert checks["service:api-1:2"]["Name"] == "Service 'api' check"
    assert checks["service:api-1:2"]["Interval"] == "1m0s"


def test_service_defaults_and_address_kept(http: httpx.Client) -> None:
    assert http.put("/v1/agent/service/register", json={"Name": "bare"}).status_code == 200
    entry = http.get("/v1/health/service/bare").json()[0]["Service"]
    assert (entry["ID"], entry["Tags"], entry["Meta"], entry["Address"]) == ("bare", [], {}, "")
    assert entry["Weights"] == {"Passing": 1, "Warning": 1}
    r = http.put("/v1/agent/service/register", json={"Name": "w", "Weights": {"Passing": 3}})
    assert r.status_code == 200
    assert http.get("/v1/agent/service/w").json()["Weights"] == {"Passing": 3, "Warning": 0}
    http.put("/v1/agent/service/register", json={"Name": "named", "Address": "db.internal"})
    assert http.get("/v1/catalog/service/named").json()[0]["ServiceAddress"] == "db.internal"


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"{nope", 400, "Request decode failed: "),
        (
            b'{"Name": "x", "Port": "80"}',
            400,
            "Request decode failed: json: cannot unmarshal string",
        ),
        (b'{"ID": "x"}', 400, "Missing service name"),
        (b'{"Name": "x", "Address": "0.0.0.0"}', 400, "Invalid service address"),
        (b'{"Name": "x", "Address": "::"}', 400, "Invalid service address"),
        (
            b'{"Name": "x", "Check": {"TTL": "1s", "Status": "ok"}}',
            400,
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
        (
            b'{"Name": "x", "Check": {"HTTP": "http://x"}}',
            400,
            "Invalid check: Interval must be > 0",
        ),
        (b'{"Name": "x", "Check": {"TTL": "ten"}}', 400, "Request decode failed: time: invalid"),
        (
            b'{"Name": "x", "Weights": {"Passing": 0}}',
            400,
            "Invalid Weights: Passing must be greater than 0",
        ),
        (
            b'{"Name": "x", "Meta": {"a.b": "1"}}',
            400,
            "Invalid Service Meta: Couldn't load metadata pair ('a.b', '1'): Key contains invalid",
        ),
        (
            b'{"Name": "x", "Kind": "connect-proxy"}',
            400,
            "Validation failed: 2 errors occurred:\n\t* Proxy.DestinationServiceName must be",
        ),
    ],
)
def test_register_errors(http: httpx.Client, body: bytes, status: int, text: str) -> None:
    r = http.put("/v1/agent/service/register", content=body)
    assert r.status_code == status
    assert r.text.startswith(text), r.text
    assert r.headers["Content-Type"].startswith("text/plain")


def test_check_register_errors(http: httpx.Client) -> None:
    r = http.put("/v1/agent/check/register", json={"TTL": "1s"})
    assert (r.status_code, r.text) == (400, "Missing check name")
    r = http.put("/v1/agent/check/register", json={"Name": "c"})
    assert (r.status_code, r.text) == (400, "Invalid check: TTL must be > 0 for TTL checks")
    r = http.put("/v1/agent/check/register", json={"Name": "c", "TTL": "1s", "ServiceID": "s"})
    assert (r.status_code, r.text) == (404, 'ServiceID "s" does not exist')
    r = http.put("/v1/agent/check/pass/nope")
    assert (r.status_code, r.text) == (500, 'CheckID "nope" does not have associated TTL')


def test_writes_are_200_with_empty_body_and_unknown_ids_are_noops(http: httpx.Client) -> None:
    for path in (
        "/v1/agent/service/deregister/never-registered",
        "/v1/agent/check/deregister/never-registered",
    ):
        r = http.put(path)
        assert (r.status_code, r.content) == (200, b"")
    r = http.put("/v1/agent/service/register", json={"Name": "x"})
    assert (r.status_code, r.content, r.headers["Content-Length"]) == (200, b"", "0")


def test_routing_404_405_options(http: httpx.Client) -> None:
    r = http.get("/v1/agent/nope")
    assert (r.status_code, r.text) == (
        404,
        "Invalid URL path: not a recognized HTTP API endpoint\n",
    )
    r = http.get("/agent/services")
    assert r.status_code == 404
    assert r.text.endswith("ensure the path starts with '/v1/'\n")
    assert http.get("/").text.startswith("Consul Agent: UI disabled.")
    r = http.post("/v1/agent/service/register", json={"Name": "x"})
    assert r.status_code == 405
    assert r.headers["Allow"] == "OPTIONS,PUT"
    r = http.delete("/v1/health/service/x")
    assert (r.status_code, r.headers["Allow"]) == (405, "OPTIONS,GET")
    r = http.options("/v1/kv/x")
    assert (r.status_code, r.headers["Allow"]) == (200, "OPTIONS,GET,PUT,DELETE")
    assert http.get("/v1/health/service/").text == "Missing service name"
    for response in (http.get("/v1/agent/nope"), http.options("/v1/kv/x")):
        assert response.headers["X-Consul-Default-ACL-Policy"] == "allow"


def test_pretty_and_compact_json(http: httpx.Client) -> None:
    compact = http.get("/v1/catalog/datacenters")
    assert compact.text == '["dc1"]'
    pretty = http.get("/v1/catalog/datacenters?pretty")
    assert pretty.text == '[\n    "dc1"\n]\n'
    assert pretty.headers["Content-Type"] == "application/json"


def test_datacenter_and_enterprise_parameters(http: httpx.Client) -> None:
    r = http.get("/v1/health/service/x", params={"dc": "dc2"})
    assert (r.status_code, r.text) == (500, "No path to datacenter")
    assert http.get("/v1/health/service/x", params={"dc": "dc1"}).status_code == 200
    assert http.get("/v1/health/service/x", params={"ns": "default"}).status_code == 200
    r = http.get("/v1/health/service/x", params={"ns": "team-a"})
    assert r.status_code == 400
    assert "Namespaces are a Consul Enterprise feature" in r.text


def test_connect_health_and_ingress(server: FakeConsul, http: httpx.Client) -> None:
    server.register_service("web", port=80)
    assert http.get("/v1/health/connect/web").json() == []
    server.register_service(
        "web-sidecar-proxy",
        kind="connect-proxy",
        port=21000,
        proxy={"DestinationServiceName": "web", "LocalServicePort": 80},
    )
    got = http.get("/v1/health/connect/web").json()
    assert [e["Service"]["ID"] for e in got] == ["web-sidecar-proxy"]
    assert got[0]["Service"]["Kind"] == "connect-proxy"
    assert got[0]["Service"]["Proxy"]["DestinationServiceName"] == "web"
    assert http.get("/v1/health/ingress/web").json() == []
    assert http.get("/v1/health/service/web", params={"peer": "other"}).json() == []
    r = http.put(
        "/v1/agent/service/register", json={"Name": "p", "Kind": "connect-proxy", "Port": 1}
    )
    assert r.status_code == 400


def test_kv_raw_keys_and_errors(server: FakeConsul, http: httpx.Client) -> None:
    assert http.put("/v1/kv/cfg/a", content=b"\x00\x01bin").json() is True
    raw = http.get("/v1/kv/cfg/a?raw")
    assert raw.content == b"\x00\x01bin"
    assert (raw.headers["Content-Type"], raw.headers["X-Content-Type-Options"]) == (
        "text/plain",
        "nosniff",
    )
    assert http.get("/v1/kv/cfg/?keys").json() == ["cfg/a"]
    assert http.get("/v1/kv/?keys&seperator=/").json() == ["cfg/"]  # Consul's old spelling
    conflict = http.put("/v1/kv/cfg/a?cas=1&acquire=s")
    assert (conflict.status_code, conflict.text) == (400, "Conflicting flags: acquire=s&cas=1\n")
    r = http.get("/v1/kv/nothing/?keys")
    assert (r.status_code, r.content) == (404, b"")
    assert http.put("/v1/kv/").text == "Missing key name"
    assert http.get("/v1/kv/").text == "Missing key name"
    assert http.put("/v1/kv/big", content=b"x" * (512 * 1024 + 1)).status_code == 413
    assert http.delete("/v1/kv/cfg/?recurse&cas=1").status_code == 400
    assert http.put("/v1/kv/f?flags=abc").status_code == 500
    server.kv_put("py", "from python")
    assert server.kv_get("py") == b"from python"
    entry = http.get("/v1/kv/py").json()[0]
    assert entry["Value"] == "ZnJvbSBweXRob24="
    assert "Session" not in entry
    server.kv_delete("py")
    assert server.kv_get("py") is None
