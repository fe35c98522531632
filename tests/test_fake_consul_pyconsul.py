"""py-consul's own clients (sync ``requests`` and ``consul.aio``) work against FakeConsul.

These follow py-consul's own test suite (criteo/py-consul tests/test_std.py, test_aio.py,
tests/api/*), with the sleeps replaced by FakeConsul's injected clock and parked-query counter.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import consul
import consul.aio
import pytest

from meshlib.testing.fake_consul import FakeConsul

Check = consul.Check


class Clock:
    """A manual monotonic clock for TTL expiry."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[FakeConsul]:
    with FakeConsul(clock=clock) as fake:
        yield fake


@pytest.fixture
def c(server: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> consul.Consul:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    return consul.Consul(host="127.0.0.1", port=server.port)


def ids(nodes: list[dict[str, dict[str, str]]]) -> list[str]:
    return [n["Service"]["ID"] for n in nodes]


def test_health_service_ttl_pass_fail_and_tags(c: consul.Consul, clock: Clock) -> None:
    _, nodes = c.health.service("foo")
    assert nodes == []
    assert c.agent.service.register(
        "foo", service_id="foo:1", check=Check.ttl("10s"), tags=["tag:foo:1"]
    )
    assert c.agent.service.register("foo", service_id="foo:2", check=Check.ttl("1s"))
    _, nodes = c.health.service("foo")
    assert ids(nodes) == ["foo:1", "foo:2"]
    _, nodes = c.health.service("foo", passing=True)
    assert nodes == []  # TTL checks start critical
    assert c.agent.check.ttl_pass("service:foo:1") is True
    assert c.agent.check.ttl_pass("service:foo:2") is True
    _, nodes = c.health.service("foo", passing=True)
    assert ids(nodes) == ["foo:1", "foo:2"]
    clock.t += 3  # the short TTL lapses; the next request evaluates expiry
    _, nodes = c.health.service("foo", passing=True)
    assert ids(nodes) == ["foo:1"]
    assert c.agent.checks()["service:foo:2"]["Output"] == "TTL expired"
    c.agent.check.ttl_pass("service:foo:2")
    _, nodes = c.health.service("foo", passing=True)
    assert ids(nodes) == ["foo:1", "foo:2"]
    _, nodes = c.health.service("foo", tag="tag:foo:1")
    assert ids(nodes) == ["foo:1"]
    _, nodes = c.health.service("foo", filter_expr='"tag:foo:1" in Service.Tags')
    assert ids(nodes) == ["foo:1"]
    c.agent.service.deregister("foo:1")
    c.agent.service.deregister("foo:2")
    assert c.health.service("foo")[1] == []


def test_agent_checks_ttl_notes_and_expiry(c: consul.Consul, clock: Clock) -> None:
    c.agent.check.register("check", Check.ttl("1s"), notes="foo")
    assert c.agent.checks()["check"]["Notes"] == "foo"
    assert c.agent.check.deregister("check") is True
    assert c.agent.checks() == {}
    assert c.agent.check.register("script_check", Check.script(["/bin/true"], 10)) is True
    assert c.agent.check.register(
        "check name", Check.script(["/bin/true"], 10, "10m"), check_id="check_id"
    )
    assert set(c.agent.checks()) == {"script_check", "check_id"}
    assert c.agent.check.register("http_check", Check.http("http://127.0.0.1:1", "1s")) is True
    assert c.agent.checks()["http_check"]["Type"] == "http"
    assert c.agent.check.register("ttl_check", Check.ttl("100ms")) is True
    for verb, status, note in (
        (c.agent.check.ttl_warn, "warning", "its not quite right"),
        (c.agent.check.ttl_fail, "critical", "something went boink!"),
        (c.agent.check.ttl_pass, "passing", "all hunky dory!"),
    ):
        assert verb("ttl_check", notes=note) is True
        check = c.agent.checks()["ttl_check"]
        assert (check["Status"], check["Output"]) == (status, note)
    clock.t += 0.12
    check = c.agent.checks()["ttl_check"]
    assert check["Status"] == "critical"
    assert check["Output"] == "TTL expired (last output before timeout follows): all hunky dory!"
    with pytest.raises(consul.ConsulException, match="does not have associated TTL"):
        c.agent.check.ttl_pass("http_check")


def test_check_for_missing_service_is_refused(c: consul.Consul) -> None:
    # Consul > 1.11 answers 404, which py-consul's boolean callback turns into False
    # (its own tests/api/test_agent.py asserts exactly this for those versions).
    assert c.agent.check.register("foo", Check.ttl("100ms"), service_id="foo1") is False
    assert c.agent.checks() == {}


def test_multi_check_ids_and_health_checks(c: consul.Consul) -> None:
    c.agent.service.register(
        "foo1",
        check=Check.ttl("10s"),
        extra_checks=[Check.ttl("20s"), Check.http("http://127.0.0.1:1", "3s")],
    )
    _, nodes = c.health.service("foo1")
    assert {ch["CheckID"] for n in nodes for ch in n["Checks"]} == {
        "service:foo1:1",
        "service:foo1:2",
        "service:foo1:3",
        "serfHealth",
    }
    _, checks = c.health.checks("foo1")
    assert [ch["CheckID"] for ch in checks] == [
        "service:foo1:1",
        "service:foo1:2",
        "service:foo1:3",
    ]
    _, checks = c.health.checks("foo1", filter_expr='CheckID == "service:foo1:2"')
    assert [ch["CheckID"] for ch in checks] == ["service:foo1:2"]


def test_health_state_and_node(c: consul.Consul) -> None:
    _, checks = c.health.state("any")
    assert [ch["ServiceID"] for ch in checks] == [""]
    c.agent.service.register("foo", service_id="foo:1", check=Check.ttl("10s"))
    _, checks = c.health.state("passing")
    assert "foo:1" not in {ch["ServiceID"] for ch in checks}
    c.agent.check.ttl_pass("service:foo:1")
    _, checks = c.health.state("passing", filter_expr='ServiceID == "foo:1"')
    assert [ch["ServiceID"] for ch in checks] == ["foo:1"]
    node = c.agent.self()["Config"]["NodeName"]
    _, checks = c.health.node(node)
    assert node in [ch["Node"] for ch in checks]
    assert c.health.node(node, filter_expr='Node == "does-not-exist"')[1] == []


def test_agent_services_self_members_status(c: consul.Consul) -> None:
    assert c.agent.service.register("foo", enable_tag_override=True) is True
    assert c.agent.services()["foo"]["EnableTagOverride"] is True
    assert c.agent.service.register("foo", address="10.10.10.1") is True
    assert c.agent.services()["foo"]["Address"] == "10.10.10.1"
    me = c.agent.self()
    assert set(me) == {"Member", "xDS", "Stats", "Config", "Coord", "DebugConfig", "Meta"}
    assert me["Member"] in c.agent.members()
    assert all("dc1" in m["Name"] for m in c.agent.members(wan=True))
    assert c.status.leader() == me["Stats"]["consul"]["leader_addr"]
    assert me["Stats"]["consul"]["leader_addr"] in c.status.peers()
    assert c.agent.service.deregister("foo") is True
    assert c.agent.services() == {}


def test_maintenance_service_and_node(c: consul.Consul) -> None:
    c.agent.service.register("foo", check=Check.ttl("100ms"))
    c.agent.check.ttl_pass("service:foo")
    assert c.agent.service.maintenance("foo", "true", "test") is True
    assert c.agent.checks()["_service_maintenance:foo"]["Notes"] == "test"
    assert c.health.service("foo", passing=True)[1] == []
    c.agent.service.maintenance("foo", "false")
    assert "_service_maintenance:foo" not in c.agent.checks()
    assert ids(c.health.service("foo", passing=True)[1]) == ["foo"]
    assert c.agent.maintenance("true", "test") is True
    assert c.agent.checks()["_node_maintenance"]["Notes"] == "test"
    assert c.health.service("foo", passing=True)[1] == []  # node checks count for every service
    c.agent.maintenance("false")
    assert "_node_maintenance" not in c.agent.checks()
    assert c.agent.service.maintenance("nope", "true") is False  # 404 -> False, no exception


def test_catalog_register_nodes_services_deregister(c: consul.Consul) -> None:
    _, nodes = c.catalog.nodes()
    assert len(nodes) == 1
    current = nodes[0]
    assert c.catalog.datacenters() == ["dc1"]
    with pytest.raises(consul.ConsulException):
        c.catalog.register("foo", "10.1.10.11", dc="dc2")
    assert c.catalog.register("n1", "10.1.10.11", service={"service": "s1"}, check={"name": "c1"})
    assert c.catalog.register("n1", "10.1.10.11", service={"service": "s2"})
    assert c.catalog.register("n2", "10.1.10.12", service={"service": "s1", "tags": ["master"]})
    with pytest.raises(consul.ConsulException):
        c.catalog.nodes(dc="dc2")
    _, nodes = c.catalog.nodes()
    nodes.remove(current)
    assert [x["Node"] for x in nodes] == ["n1", "n2"]
    _, services = c.catalog.services()
    assert services == {"s1": ["master"], "s2": [], "consul": []}
    _, node = c.catalog.node("n1")
    assert set(node["Services"]) == {"s1", "s2"}
    assert c.catalog.node("n3")[1] is None
    _, nodes = c.catalog.service("s1")
    assert {x["Node"] for x in nodes} == {"n1", "n2"}
    _, nodes = c.catalog.service("s1", tag="master")
    assert {x["Node"] for x in nodes} == {"n2"}
    assert c.catalog.deregister("n1", check_id="c1") is True
    assert c.catalog.deregister("n2", service_id="s1") is True
    _, nodes = c.catalog.service("s1")
    assert {x["Node"] for x in nodes} == {"n1"}
    assert c.catalog.deregister("n1") is True
    assert c.catalog.deregister("n2") is True
    _, nodes = c.catalog.nodes()
    nodes.remove(current)
    assert nodes == []


def test_kv_get_put_recurse_keys_cas_flags_delete(c: consul.Consul) -> None:
    assert c.kv.get("foo")[1] is None
    assert c.kv.put("foo", "bar") is True
    assert c.kv.get("foo")[1]["Value"] == b"bar"
    c.kv.put("foo", struct.pack("i", 1000))
    assert struct.unpack("i", c.kv.get("foo")[1]["Value"]) == (1000,)
    c.kv.put("foo", "")
    assert c.kv.get("foo")[1]["Value"] is None
    c.kv.put("foo", None)
    assert c.kv.get("foo")[1]["Value"] is None
    c.kv.delete("foo")
    assert c.kv.put("foo", "bar", cas=50) is False
    assert c.kv.put("foo", "bar", cas=0) is True
    _, data = c.kv.get("foo")
    assert c.kv.put("foo", "bar2", cas=data["ModifyIndex"] - 1) is False
    assert c.kv.put("foo", "bar2", cas=data["ModifyIndex"]) is True
    assert c.kv.get("foo")[1]["Value"] == b"bar2"
    assert c.kv.put("foo", "bar", flags=50) is True
    assert c.kv.get("foo")[1]["Flags"] == 50
    index, data = c.kv.get("foo")
    assert c.kv.delete("foo", cas=data["ModifyIndex"] - 1) is False
    assert c.kv.get("foo") == (index, data)
    assert c.kv.delete("foo", cas=data["ModifyIndex"]) is True
    assert c.kv.get("foo")[1] is None
    assert c.kv.get("foo/", recurse=True)[1] is None
    c.kv.put("foo/", None)
    for i in (1, 2, 3):
        c.kv.put(f"foo/bar{i}", str(i))
    _, data = c.kv.get("foo/", recurse=True)
    assert [x["Key"] for x in data] == ["foo/", "foo/bar1", "foo/bar2", "foo/bar3"]
    assert [x["Value"] for x in data] == [None, b"1", b"2", b"3"]
    assert c.kv.delete("foo/bar2") is True
    assert c.kv.delete("foo/", recurse=True) is True
    assert c.kv.get("foo/", recurse=True)[1] is None
    c.kv.put("bar", "4")
    c.kv.put("base/foo", "1")
    c.kv.put("base/base/foo", "5")
    assert c.kv.get("base/", keys=True, separator="/")[1] == ["base/base/", "base/foo"]
    with pytest.raises(consul.ConsulException):
        c.kv.put("foo", "bar", acquire="foo")  # sessions are not implemented, like a bad session


def test_blocking_query_returns_on_change_and_times_out_with_same_index(
    c: consul.Consul, server: FakeConsul
) -> None:
    c.agent.service.register("web", service_id="web1")
    index, _ = c.health.service("web")
    started = time.monotonic()
    same, _ = c.health.service("web", index=index, wait="100ms")
    assert same == index
    assert time.monotonic() - started >= 0.1

    def change() -> None:
        server.wait_for_blocking_queries(1)
        c2 = consul.Consul(host="127.0.0.1", port=server.port)
        c2.agent.service.register("web", service_id="web2")

    writer = threading.Thread(target=change)
    writer.start()
    new, nodes = c.health.service("web", index=index, wait="5s")
    writer.join()
    assert int(new) > int(index)
    assert ids(nodes) == ["web1", "web2"]
    kv_index, _ = c.kv.get("k")
    assert c.kv.get("k", index=kv_index, wait="20ms")[0] == kv_index


@pytest.mark.filterwarnings("ignore:ssl_context is deprecated:DeprecationWarning")
async def test_aio_client(server: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    c = consul.aio.Consul(host="127.0.0.1", port=server.port)
    try:
        assert await c.agent.services() == {}
        assert await c.agent.service.register("foo", check=Check.ttl("10s")) is True
        assert await c.agent.check.ttl_pass("service:foo") is True
        index, nodes = await c.health.service("foo", passing=True)
        assert ids(nodes) == ["foo"]
        _, services = await c.catalog.services()
        assert services == {"consul": [], "foo": []}
        assert await c.kv.put("foo", "bar") is True
        kv_index, data = await c.kv.get("foo")
        assert data["Value"] == b"bar"

        async def put_later() -> None:
            await c.kv.put("foo", "baz")

        import asyncio

        waiter = asyncio.ensure_future(c.kv.get("foo", index=kv_index, wait="5s"))
        await asyncio.to_thread(server.wait_for_blocking_queries, 1)
        await put_later()
        new_index, data = await waiter
        assert int(new_index) > int(kv_index)
        assert data["Value"] == b"baz"
        assert await c.agent.service.maintenance("foo", "true") is True
        assert (await c.health.service("foo", passing=True))[1] == []
        assert await c.agent.service.deregister("foo") is True
        assert (await c.health.service("foo", index=index, wait="10ms"))[1] == []
    finally:
        await c.close()
