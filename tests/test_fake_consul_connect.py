"""FakeConsul's Connect: a real CA (roots, leaves, rotation), intentions, authorize, health/connect.

Everything runs over HTTP on 127.0.0.1 against the shapes in tests/data/consul-api/connect-*.json
(Consul's docs samples). Leaves are checked with ``cryptography`` and with a real mutual-TLS
handshake between two of them on loopback. Blocking reads are parked on a thread and released
by ``rotate_ca()``/``reissue_leaf()``, so nothing sleeps for more than a short leaf lifetime.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib.testing.fake_consul import FakeConsul

DATA = Path(__file__).parent / "data" / "consul-api"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


@pytest.fixture
def server() -> Iterator[FakeConsul]:
    with FakeConsul(run_checks=False) as fake:
        yield fake


@pytest.fixture
def http(server: FakeConsul) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


class Background:
    """One GET on a thread, so the test can act while it is parked."""

    def __init__(self, url: str, path: str, params: dict[str, str]) -> None:
        self.response: httpx.Response | None = None

        def run() -> None:
            self.response = httpx.get(url + path, params=params, timeout=10)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(10)
        assert self.response is not None
        return self.response


def index_of(r: httpx.Response) -> int:
    return int(r.headers["X-Consul-Index"])


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def uri_sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(ext.get_values_for_type(x509.UniformResourceIdentifier))


# ------------------------------------------------------------------------------ roots


@pytest.mark.parametrize("path", ["/v1/agent/connect/ca/roots", "/v1/connect/ca/roots"])
def test_roots_have_the_docs_shape(server: FakeConsul, http: httpx.Client, path: str) -> None:
    expected = sample("connect-ca-roots.json")["response_body"]
    r = http.get(path)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert index_of(r) >= 1
    doc = r.json()
    assert set(doc) == set(expected)
    assert doc["TrustDomain"] == server.trust_domain
    assert doc["TrustDomain"].endswith(".consul")
    (root,) = doc["Roots"]
    assert set(root) == set(expected["Roots"][0])
    assert root["ID"] == doc["ActiveRootID"]
    assert root["Active"] is True
    assert (root["PrivateKeyType"], root["PrivateKeyBits"]) == ("ec", 256)
    assert root["IntermediateCerts"] is None
    assert root["ExternalTrustDomain"] + ".consul" == doc["TrustDomain"]
    assert isinstance(root["SerialNumber"], int)
    assert len(root["ID"].split(":")) == 20  # SHA-1 fingerprint, colon-hex
    assert len(root["SigningKeyID"].split(":")) == 32
    cert = load(root["RootCert"])
    assert cert.serial_number == root["SerialNumber"]
    assert root["NotBefore"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert uri_sans(cert) == [f"spiffe://{doc['TrustDomain']}"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_roots_pem_form(http: httpx.Client) -> None:
    r = http.get("/v1/connect/ca/roots", params={"pem": "true"})
    assert r.headers["Content-Type"] == "application/pem-certificate-chain"
    root = http.get("/v1/connect/ca/roots").json()["Roots"][0]["RootCert"]
    assert r.text == root
    assert http.get("/v1/connect/ca/roots", params={"pem": "0"}).json()["Roots"]
    bad = http.get("/v1/connect/ca/roots", params={"pem": "maybe"})
    assert (bad.status_code, bad.text) == (400, "The 'pem' query parameter must be a boolean value")


def test_roots_blocking_query_wakes_on_rotation(server: FakeConsul, http: httpx.Client) -> None:
    first = http.get("/v1/agent/connect/ca/roots")
    old_id = first.json()["ActiveRootID"]
    parked = Background(
        server.url, "/v1/agent/connect/ca/roots", {"index": str(index_of(first)), "wait": "10s"}
    )
    server.wait_for_blocking_queries(1)
    new_id = server.rotate_ca()
    r = parked.result()
    assert index_of(r) > index_of(first)
    doc = r.json()
    assert doc["ActiveRootID"] == new_id != old_id
    by_id = {root["ID"]: root for root in doc["Roots"]}
    assert by_id[old_id]["Active"] is False  # kept, trusted, while leaves roll over
    assert by_id[new_id]["Active"] is True
    assert [root["ID"] for root in doc["Roots"]] == sorted(by_id)
    assert server.ca_root_pems()[0] == by_id[new_id]["RootCert"]


def test_old_root_is_pruned_after_twice_the_leaf_ttl() -> None:
    with FakeConsul(run_checks=False, leaf_cert_ttl=0.1) as fake:
        old = fake.rotate_ca()
        fake.rotate_ca()
        url = fake.url + "/v1/agent/connect/ca/roots"
        deadline = time.monotonic() + 5
        ids = [old]
        while old in ids and time.monotonic() < deadline:
            ids = [root["ID"] for root in httpx.get(url).json()["Roots"]]
            time.sleep(0.05)
        assert old not in ids
        assert len(ids) == 1


# ------------------------------------------------------------------------------- leaf


def test_leaf_has_the_docs_shape_and_chains_to_the_active_root(
    server: FakeConsul, http: httpx.Client
) -> None:
    expected = sample("connect-ca-leaf.json")["response_body"]
    r = http.get("/v1/agent/connect/ca/leaf/web")
    assert r.status_code == 200
    leaf = r.json()
    assert set(leaf) == set(expected) - {"Namespace"}  # Namespace is Enterprise-only
    assert leaf["Service"] == "web"
    assert (
        leaf["ServiceURI"]
        == (f"spiffe://{server.trust_domain}/ns/default/dc/dc1/svc/web")
        == server.spiffe_uri("web")
    )
    assert index_of(r) == leaf["ModifyIndex"]
    cert = load(leaf["CertPEM"])
    assert uri_sans(cert) == [leaf["ServiceURI"]]
    assert int(leaf["SerialNumber"].replace(":", ""), 16) == cert.serial_number
    assert "BEGIN EC PRIVATE KEY" in leaf["PrivateKeyPEM"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 72 * 3600 <= lifetime.total_seconds() <= 72 * 3600 + 120  # 72h, backdated a minute
    assert leaf["ValidBefore"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    roots = http.get("/v1/agent/connect/ca/roots").json()
    active = next(x for x in roots["Roots"] if x["ID"] == roots["ActiveRootID"])
    cert.verify_directly_issued_by(load(active["RootCert"]))
    # Cached: the same leaf until something makes it due.
    assert http.get("/v1/agent/connect/ca/leaf/web").json()["SerialNumber"] == leaf["SerialNumber"]


def test_two_leaves_complete_a_mutual_tls_handshake(http: httpx.Client, tmp_path: Path) -> None:
    root = http.get("/v1/agent/connect/ca/roots").json()["Roots"][0]["RootCert"]
    (tmp_path / "root.pem").write_text(root)
    contexts = {}
    for name, side in (("web", ssl.PROTOCOL_TLS_CLIENT), ("db", ssl.PROTOCOL_TLS_SERVER)):
        leaf = http.get(f"/v1/agent/connect/ca/leaf/{name}").json()
        (tmp_path / f"{name}.crt").write_text(leaf["CertPEM"])
        (tmp_path / f"{name}.key").write_text(leaf["PrivateKeyPEM"])
        ctx = ssl.SSLContext(side)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(tmp_path / "root.pem")
        ctx.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        contexts[name] = ctx
    peer_seen: list[Any] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            conn, _ = listener.accept()
            with contexts["db"].wrap_socket(conn, server_side=True) as tls:
                peer_seen.append(tls.getpeercert())
                tls.sendall(tls.recv(16))

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            contexts["web"].wrap_socket(raw) as tls,
        ):
            tls.sendall(b"ping")
            assert tls.recv(16) == b"ping"
            server_uri = dict(tls.getpeercert()["subjectAltName"])["URI"]
        thread.join(5)
    assert server_uri.endswith("/svc/db")
    assert dict(peer_seen[0]["subjectAltName"])["URI"].endswith("/svc/web")


def test_leaf_is_reissued_on_rotation_and_wakes_its_watcher(
    server: FakeConsul, http: httpx.Client
) -> None:
    first = http.get("/v1/agent/connect/ca/leaf/web")
    parked = Background(
        server.url, "/v1/agent/connect/ca/leaf/web", {"index": str(index_of(first)), "wait": "10s"}
    )
    server.wait_for_blocking_queries(1)
    new_root = server.rotate_ca()
    r = parked.result()
    assert index_of(r) > index_of(first)
    leaf = r.json()
    assert leaf["SerialNumber"] != first.json()["SerialNumber"]
    roots = http.get("/v1/agent/connect/ca/roots").json()
    new_pem = next(x["RootCert"] for x in roots["Roots"] if x["ID"] == new_root)
    load(leaf["CertPEM"]).verify_directly_issued_by(load(new_pem))


def test_leaf_reissue_before_expiry_wakes_only_that_service(
    server: FakeConsul, http: httpx.Client
) -> None:
    web = http.get("/v1/agent/connect/ca/leaf/web")
    db = http.get("/v1/agent/connect/ca/leaf/db")
    parked_db = Background(
        server.url, "/v1/agent/connect/ca/leaf/db", {"index": str(index_of(db)), "wait": "300ms"}
    )
    parked_web = Background(
        server.url, "/v1/agent/connect/ca/leaf/web", {"index": str(index_of(web)), "wait": "10s"}
    )
    server.wait_for_blocking_queries(2)
    server.reissue_leaf("web")
    assert parked_web.result().json()["SerialNumber"] != web.json()["SerialNumber"]
    assert parked_db.result().json()["SerialNumber"] == db.json()["SerialNumber"]


def test_short_leaf_ttl_renews_on_its_own() -> None:
    with FakeConsul(run_checks=False, leaf_cert_ttl="400ms") as fake:
        first = httpx.get(fake.url + "/v1/agent/connect/ca/leaf/web", timeout=5)
        cert = load(first.json()["CertPEM"])
        assert cert.not_valid_after_utc > cert.not_valid_before_utc  # still a valid certificate
        renewed = httpx.get(
            fake.url + "/v1/agent/connect/ca/leaf/web",
            params={"index": str(index_of(first)), "wait": "5s"},
            timeout=10,
        )
        assert index_of(renewed) > index_of(first)
        assert renewed.json()["SerialNumber"] != first.json()["SerialNumber"]
        fake.set_leaf_cert_ttl("1h")
        assert fake.leaf_cert_ttl == 3600.0
    with pytest.raises(ValueError, match="positive"):
        FakeConsul(leaf_cert_ttl=0)


# ------------------------------------------------------------------------- intentions


def test_intentions_crud_by_name(server: FakeConsul, http: httpx.Client) -> None:
    pair = {"source": "web", "destination": "db"}
    r = http.put("/v1/connect/intentions/exact", params=pair, json={"Action": "allow"})
    assert (r.status_code, r.json()) == (200, True)
    got = http.get("/v1/connect/intentions/exact", params=pair)
    expected = sample("connect-intentions-exact.json")["response_body"]
    doc = got.json()
    assert set(doc) == set(expected)
    assert {k: doc[k] for k in expected if not k.endswith("Index")} == {
        k: v for k, v in expected.items() if not k.endswith("Index")
    }
    assert index_of(got) == doc["ModifyIndex"]
    # Lowercase keys work, and an upsert replaces the intention in place.
    r = http.put(
        "/v1/connect/intentions/exact", params=pair, json={"action": "deny", "description": "no"}
    )
    assert r.json() is True
    listed = http.get("/v1/connect/intentions").json()
    assert [(i["Action"], i["Description"]) for i in listed] == [("deny", "no")]
    assert listed[0]["CreateIndex"] == doc["CreateIndex"] < listed[0]["ModifyIndex"]
    assert http.delete("/v1/connect/intentions/exact", params=pair).json() is True
    missing = http.get("/v1/connect/intentions/exact", params=pair)
    assert (missing.status_code, missing.text) == (404, "Intention not found")
    assert http.get("/v1/connect/intentions").json() == []


def test_intention_errors(http: httpx.Client) -> None:
    r = http.put("/v1/connect/intentions/exact", params={"source": "web"}, json={"Action": "x"})
    assert (r.status_code, r.text) == (500, "required query parameter 'destination' not set")
    pair = {"source": "web", "destination": "db"}
    r = http.put("/v1/connect/intentions/exact", params=pair, json={"Action": "maybe"})
    assert (r.status_code, r.text) == (500, "Action must be set to 'allow' or 'deny'")
    r = http.put("/v1/connect/intentions/exact", params=pair, content=b"{")
    assert r.status_code == 400
    assert r.text.startswith("Request decode failed")
    r = http.patch("/v1/connect/intentions/exact", params=pair)
    assert r.status_code == 405
    assert r.headers["Allow"] == "OPTIONS,GET,PUT,DELETE"


def test_legacy_create_read_and_delete_by_id(http: httpx.Client) -> None:
    body = sample("connect-intentions-create.json")["request_body"]
    r = http.post("/v1/connect/intentions", json=body)
    assert r.status_code == 200
    ident = r.json()["ID"]
    got = http.get(f"/v1/connect/intentions/{ident}").json()
    assert set(got) == set(sample("connect-intentions-by-id.json")["response_body"])
    assert (got["ID"], got["SourceName"], got["Precedence"]) == (ident, "web", 9)
    dup = http.post("/v1/connect/intentions", json=body)
    assert dup.status_code == 500
    assert dup.text.startswith("duplicate intention found: default/web => default/db (ID: ")
    assert http.delete(f"/v1/connect/intentions/{ident}").json() is True
    assert http.get(f"/v1/connect/intentions/{ident}").status_code == 404


def test_precedence_exact_beats_wildcard(server: FakeConsul, http: httpx.Client) -> None:
    def put(source: str, destination: str, action: str) -> None:
        params = {"source": source, "destination": destination}
        assert http.put("/v1/connect/intentions/exact", params=params, json={"Action": action})

    put("*", "*", "deny")
    put("*", "db", "allow")
    put("web", "*", "allow")
    put("web", "db", "deny")
    listed = http.get("/v1/connect/intentions").json()
    assert [(i["SourceName"], i["DestinationName"], i["Precedence"]) for i in listed] == [
        ("web", "db", 9),
        ("*", "db", 8),
        ("web", "*", 6),
        ("*", "*", 5),
    ]
    assert server.check_intention("web", "db") == (
        False,
        "Matched L4 intention: default/web => default/db (Precedence: 9, Action: DENY)",
    )
    assert server.check_intention("api", "db")[0] is True  # * => db beats * => *
    assert server.check_intention("web", "cache")[0] is True  # web => * beats * => *
    assert server.check_intention("api", "cache")[0] is False  # only * => * matches
    check = http.get("/v1/connect/intentions/check", params={"source": "api", "destination": "db"})
    assert check.json() == {"Allowed": True}
    match = http.get("/v1/connect/intentions/match", params={"by": "destination", "name": "db"})
    assert [(i["SourceName"], i["DestinationName"]) for i in match.json()["db"]] == [
        ("web", "db"),
        ("*", "db"),
        ("web", "*"),
        ("*", "*"),
    ]


def test_intention_list_blocks_until_a_write(server: FakeConsul, http: httpx.Client) -> None:
    first = http.get("/v1/connect/intentions")
    parked = Background(
        server.url, "/v1/connect/intentions", {"index": str(index_of(first)), "wait": "10s"}
    )
    server.wait_for_blocking_queries(1)
    server.upsert_intention("web", "db", "deny")
    r = parked.result()
    assert index_of(r) > index_of(first)
    assert [i["Action"] for i in r.json()] == ["deny"]
    assert server.intentions() == r.json()


# -------------------------------------------------------------------------- authorize


def authorize(http: httpx.Client, target: str, uri: str) -> httpx.Response:
    body = {"Target": target, "ClientCertURI": uri, "ClientCertSerial": "02"}
    return http.post("/v1/agent/connect/authorize", json=body)


def test_authorize_answers_with_consuls_reasons(server: FakeConsul, http: httpx.Client) -> None:
    web = server.spiffe_uri("web")
    r = authorize(http, "db", web)
    assert r.json() == sample("connect-authorize.json")["response_body_default"]
    server.upsert_intention("web", "db", "deny")
    assert authorize(http, "db", web).json() == {
        "Authorized": False,
        "Reason": "Matched L4 intention: default/web => default/db (Precedence: 9, Action: DENY)",
    }
    server.upsert_intention("*", "db", "allow")
    other = authorize(http, "db", server.spiffe_uri("api")).json()
    assert other["Authorized"] is True
    assert other["Reason"].endswith("default/* => default/db (Precedence: 8, Action: ALLOW)")
    # The URI's trust domain is not checked (neither does Consul's ConnectAuthorize).
    foreign = "spiffe://other.consul/ns/default/dc/dc9/svc/web"
    assert authorize(http, "db", foreign).json()["Authorized"] is False


_SVC = "spiffe://x.consul/ns/default/dc/dc1/svc/web"
_NOT_CONNECT = "ClientCertURI not a valid Connect identifier"
_NOT_SERVICE = "ClientCertURI not a valid Service identifier"


@pytest.mark.parametrize(
    ("target", "uri", "text"),
    [
        ("", _SVC, "Target service must be specified"),
        ("db", "", _NOT_CONNECT),
        ("db", _SVC.replace("spiffe", "https"), _NOT_CONNECT),
        ("db", "spiffe://x.consul/ns/default/svc/web", _NOT_CONNECT),
        (
            "db",
            "spiffe://x.consul/agent/client/dc/dc1/id/n1",
            _NOT_SERVICE,
        ),
    ],
)
def test_authorize_refusals(http: httpx.Client, target: str, uri: str, text: str) -> None:
    r = authorize(http, target, uri)
    assert (r.status_code, r.text) == (400, text)


def test_default_deny_follows_the_acl_default_policy() -> None:
    with FakeConsul(run_checks=False, default_acl_policy="deny", acl_tokens={"w": "write"}) as fake:
        headers = {"X-Consul-Token": "w"}
        with httpx.Client(base_url=fake.url, headers=headers, timeout=10) as http:
            web = fake.spiffe_uri("web")
            assert authorize(http, "db", web).json() == {
                "Authorized": False,
                "Reason": "Default behavior configured by ACLs",
            }
            fake.upsert_intention("web", "db", "allow")
            assert authorize(http, "db", web).json()["Authorized"] is True
        anonymous = httpx.post(
            fake.url + "/v1/agent/connect/authorize",
            json={"Target": "db", "ClientCertURI": web},
        )
        assert (anonymous.status_code, anonymous.text) == (403, "Permission denied")
        assert httpx.get(fake.url + "/v1/agent/connect/ca/roots").status_code == 200


# --------------------------------------------------------------------- health/connect


def test_health_connect_lists_native_and_proxy_instances(
    server: FakeConsul, http: httpx.Client
) -> None:
    server.register_service("web", service_id="web-plain", port=80)
    r = http.put(
        "/v1/agent/service/register",
        json={"Name": "web", "ID": "web-native", "Port": 81, "Connect": {"Native": True}},
    )
    assert r.status_code == 200
    r = http.put(
        "/v1/agent/service/register",
        json={
            "Name": "web-sidecar-proxy",
            "Kind": "connect-proxy",
            "Port": 21000,
            "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 80},
            "Check": {"TTL": "30s", "Status": "passing"},
        },
    )
    assert r.status_code == 200
    server.register_service("db-sidecar-proxy", kind="connect-proxy", port=21001,
                            proxy={"DestinationServiceName": "db"})  # fmt: skip
    got = http.get("/v1/health/connect/web")
    assert sorted(e["Service"]["ID"] for e in got.json()) == ["web-native", "web-sidecar-proxy"]
    native = next(e for e in got.json() if e["Service"]["ID"] == "web-native")["Service"]
    assert native["Connect"]["Native"] is True
    agent_view = http.get("/v1/agent/service/web-native").json()
    assert agent_view["Connect"]["Native"] is True
    proxy = http.get("/v1/agent/service/web-sidecar-proxy").json()
    assert proxy["Kind"] == "connect-proxy"
    assert proxy["Proxy"]["DestinationServiceName"] == "web"
    # ?passing and blocking behave as on /v1/health/service.
    server.set_check_status("service:web-sidecar-proxy", "critical")
    passing = http.get("/v1/health/connect/web", params={"passing": "1"})
    assert [e["Service"]["ID"] for e in passing.json()] == ["web-native"]
    parked = Background(
        server.url,
        "/v1/health/connect/web",
        {"index": str(index_of(passing)), "wait": "10s", "passing": "1"},
    )
    server.wait_for_blocking_queries(1)
    server.set_check_status("service:web-sidecar-proxy", "passing")
    woke = parked.result()
    assert index_of(woke) > index_of(passing)
    assert sorted(e["Service"]["ID"] for e in woke.json()) == ["web-native", "web-sidecar-proxy"]


# --------------------------------------------------------------------- Connect disabled


def test_connect_disabled_answers_like_consul() -> None:
    text = sample("connect-disabled.json")["response_body"]
    with FakeConsul(run_checks=False, connect=False) as fake:
        assert not fake.connect_enabled
        with httpx.Client(base_url=fake.url, timeout=10) as http:
            for path in (
                "/v1/agent/connect/ca/roots",
                "/v1/connect/ca/roots",
                "/v1/agent/connect/ca/leaf/web",
            ):
                r = http.get(path)
                assert (r.status_code, r.text) == (500, text), path
                assert r.headers["Content-Type"].startswith("text/plain")
            pair = {"source": "web", "destination": "db"}
            r = http.put("/v1/connect/intentions/exact", params=pair, json={"Action": "allow"})
            assert (r.status_code, r.text) == (500, text)
            with pytest.raises(ValueError, match="Connect must be enabled"):
                fake.rotate_ca()
            fake.set_connect_enabled(True)
            assert http.get("/v1/agent/connect/ca/roots").status_code == 200


def test_cryptography_is_imported_only_when_the_ca_is_used() -> None:
    script = (
        "import sys\n"
        "from meshlib.testing.fake_consul import FakeConsul\n"
        "assert 'cryptography' not in sys.modules, 'imported eagerly'\n"
        "sys.modules['cryptography'] = None\n"
        "import httpx\n"
        "with FakeConsul(run_checks=False) as fake:\n"
        "    assert httpx.get(fake.url + '/v1/agent/services').status_code == 200\n"
        "    r = httpx.get(fake.url + '/v1/agent/connect/ca/roots')\n"
        "    print(r.status_code, r.text)\n"
        "    try:\n"
        "        fake.rotate_ca()\n"
        "    except ImportError as exc:\n"
        "        print('python:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.startswith("500 FakeConsul's Connect CA needs the 'cryptography' package")
    assert "pip install 'meshlib[testing]'" in out
    assert "python: FakeConsul's Connect CA needs" in out
