"""ACLs: read and write tokens, default policies, 403 texts, and list filtering like Consul's."""

from __future__ import annotations

from collections.abc import Iterator

import consul
import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul

TOKENS = {"reader": "read", "writer": "write"}


@pytest.fixture
def deny() -> Iterator[FakeConsul]:
    with FakeConsul(acl_tokens=TOKENS, default_acl_policy="deny") as fake:
        fake.register_service("web", port=80)
        fake.kv_put("cfg", "v")
        yield fake


def test_tokens_via_header_query_and_bearer(deny: FakeConsul) -> None:
    url = deny.url + "/v1/health/service/web"
    for kwargs in (
        {"headers": {"X-Consul-Token": "reader"}},
        {"params": {"token": "reader"}},
        {"headers": {"Authorization": "Bearer reader"}},
    ):
        r = httpx.get(url, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 200
        assert [e["Service"]["ID"] for e in r.json()] == ["web"]
        assert r.headers["X-Consul-Default-ACL-Policy"] == "deny"


def test_read_token_cannot_write_and_write_token_can(deny: FakeConsul) -> None:
    body = {"Name": "api"}
    r = httpx.put(
        deny.url + "/v1/agent/service/register", json=body, headers={"X-Consul-Token": "reader"}
    )
    assert (r.status_code, r.text) == (403, "Permission denied")
    r = httpx.put(deny.url + "/v1/kv/cfg", content=b"x", params={"token": "reader"})
    assert (r.status_code, r.text) == (403, "Permission denied")
    r = httpx.put(
        deny.url + "/v1/agent/service/register", json=body, headers={"X-Consul-Token": "writer"}
    )
    assert r.status_code == 200
    assert httpx.get(deny.url + "/v1/kv/cfg", params={"token": "writer"}).status_code == 200


def test_unknown_token_is_acl_not_found(deny: FakeConsul) -> None:
    r = httpx.get(deny.url + "/v1/health/service/web", headers={"X-Consul-Token": "stolen"})
    assert (r.status_code, r.text) == (403, "ACL not found")


def test_anonymous_under_deny_gets_filtered_lists_and_403_on_objects(deny: FakeConsul) -> None:
    r = httpx.get(deny.url + "/v1/health/service/web")
    assert (r.status_code, r.json()) == (200, [])
    # Consul masks the "results filtered" flag for anonymous requests.
    assert "X-Consul-Results-Filtered-By-ACLs" not in r.headers
    assert int(r.headers["X-Consul-Index"]) >= 1
    assert httpx.get(deny.url + "/v1/catalog/services").json() == {}
    assert httpx.get(deny.url + "/v1/agent/services").json() == {}
    r = httpx.get(deny.url + "/v1/kv/cfg")
    assert (r.status_code, r.text) == (403, "Permission denied")
    assert httpx.get(deny.url + "/v1/agent/self").status_code == 403
    r = httpx.put(deny.url + "/v1/agent/service/register", json={"Name": "x"})
    assert r.status_code == 403
    assert httpx.get(deny.url + "/v1/status/leader").status_code == 200  # no ACL on status


def test_default_allow_with_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    with FakeConsul(acl_tokens=TOKENS) as fake:
        anonymous = consul.Consul(host="127.0.0.1", port=fake.port)
        assert anonymous.agent.service.register("free") is True
        reader = consul.Consul(host="127.0.0.1", port=fake.port, token="reader")
        with pytest.raises(consul.ACLPermissionDenied):
            reader.agent.service.register("nope")
        with pytest.raises(consul.ACLPermissionDenied):
            reader.kv.put("k", "v")
        assert [e["Service"]["ID"] for e in reader.health.service("free")[1]] == ["free"]
        r = httpx.get(fake.url + "/v1/agent/services")
        assert r.headers["X-Consul-Default-ACL-Policy"] == "allow"


def test_acls_off_ignore_tokens() -> None:
    with FakeConsul() as fake:
        r = httpx.put(
            fake.url + "/v1/agent/service/register",
            json={"Name": "x"},
            headers={"X-Consul-Token": "anything"},
        )
        assert r.status_code == 200


def test_invalid_acl_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="policy must be 'read' or 'write'"):
        FakeConsul(acl_tokens={"t": "admin"})
    with pytest.raises(ValueError, match="default_acl_policy"):
        FakeConsul(default_acl_policy="maybe")
