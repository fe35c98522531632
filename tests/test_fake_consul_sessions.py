"""FakeConsul's sessions and KV locks, driven by py-consul, with Consul's semantics.

A lock is a key acquired by a session: a second session cannot acquire it (``false``), the
holder can update it, only the holder can release it, and a destroyed or expired session
releases (or, with ``Behavior=delete``, deletes) what it held, after which other sessions wait
out the lock delay. The clock is injected, so TTLs and lock delays take no real time.
"""

from __future__ import annotations

from collections.abc import Iterator

import consul
import httpx
import pytest

from meshlib.testing.fake_consul import FakeConsul


class Clock:
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
def c(server: FakeConsul) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=server.port)


def test_create_info_list_destroy(c: consul.Consul) -> None:
    sid = c.session.create(name="leader", ttl=30)
    _, info = c.session.info(sid)
    assert info["ID"] == sid
    assert info["Name"] == "leader"
    assert info["TTL"] == "30s"
    assert info["Behavior"] == "release"
    assert info["LockDelay"] == 15_000_000_000
    assert info["NodeChecks"] == ["serfHealth"]
    assert info["Node"] == c.agent.self()["Config"]["NodeName"]
    assert info["CreateIndex"] == info["ModifyIndex"] > 0
    _, listed = c.session.list()
    assert [s["ID"] for s in listed] == [sid]
    _, on_node = c.session.node(info["Node"])
    assert [s["ID"] for s in on_node] == [sid]
    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    assert c.session.list()[1] == []
    assert c.session.destroy(sid) is True  # destroying an unknown session is not an error


def test_a_second_session_cannot_acquire_a_held_lock(c: consul.Consul) -> None:
    s1, s2 = c.session.create(), c.session.create()
    assert c.kv.put("service/leader", "one", acquire=s1) is True
    assert c.kv.put("service/leader", "two", acquire=s2) is False
    _, entry = c.kv.get("service/leader")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"one")
    # The holder may acquire again (an update, the lock index stays) and write it plainly.
    assert c.kv.put("service/leader", "one-b", acquire=s1) is True
    assert c.kv.put("service/leader", "one-c") is True
    _, entry = c.kv.get("service/leader")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"one-c")
    # Only the holder releases; then another session acquires and the lock index grows.
    assert c.kv.put("service/leader", "x", release=s2) is False
    assert c.kv.put("service/leader", "free", release=s1) is True
    _, entry = c.kv.get("service/leader")
    assert "Session" not in entry
    assert entry["Value"] == b"free"
    assert c.kv.put("service/leader", "two", acquire=s2) is True
    assert c.kv.get("service/leader")[1]["LockIndex"] == 2
    assert c.kv.put("missing", "x", release=s1) is False


def test_unknown_session_is_refused(c: consul.Consul) -> None:
    with pytest.raises(consul.ConsulException, match="Invalid session"):
        c.kv.put("k", "v", acquire="00000000-0000-0000-0000-000000000000")


def test_destroy_releases_and_others_wait_out_the_lock_delay(
    c: consul.Consul, clock: Clock
) -> None:
    s1 = c.session.create(lock_delay=5)
    s2 = c.session.create()
    assert c.kv.put("lock", "a", acquire=s1) is True
    assert c.session.destroy(s1) is True
    _, entry = c.kv.get("lock")
    assert "Session" not in entry  # released, the value stays
    assert entry["Value"] == b"a"
    assert c.kv.put("lock", "b", acquire=s2) is False  # within the 5 s lock delay
    clock.t += 5.1
    assert c.kv.put("lock", "b", acquire=s2) is True


def test_delete_behavior_deletes_held_keys(c: consul.Consul) -> None:
    s1 = c.session.create(behavior="delete")
    assert c.kv.put("ephemeral", "x", acquire=s1) is True
    c.session.destroy(s1)
    assert c.kv.get("ephemeral")[1] is None


def test_ttl_expiry_and_renew(c: consul.Consul, server: FakeConsul, clock: Clock) -> None:
    sid = c.session.create(ttl=10)
    assert c.kv.put("lock", "a", acquire=sid) is True
    clock.t += 15  # within TTL x 2, as Consul's timers allow
    renewed = httpx.put(f"http://127.0.0.1:{server.port}/v1/session/renew/{sid}").json()
    assert renewed[0]["ID"] == sid
    clock.t += 15
    assert c.session.info(sid)[1] is not None
    clock.t += 21  # past TTL x 2 since the renewal
    assert c.session.info(sid)[1] is None
    assert "Session" not in c.kv.get("lock")[1]
    gone = httpx.put(f"http://127.0.0.1:{server.port}/v1/session/renew/{sid}")
    assert gone.status_code == 404
    assert f"Session id '{sid}' not found" in gone.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"TTL": "5s"}, "Invalid Session TTL '5s', must be between [10s=24h0m0s]"),
        ({"Behavior": "keep"}, "Invalid Behavior setting 'keep'"),
        ({"LockDelay": "90s"}, "Lock delay must be less than 1m0s"),
        ({"Node": "elsewhere"}, "Missing node registration"),
        ({"NodeChecks": ["nope"]}, "Missing check 'nope' registration"),
    ],
)
def test_create_validates_like_consul(server: FakeConsul, body: dict, message: str) -> None:  # type: ignore[type-arg]
    r = httpx.put(f"http://127.0.0.1:{server.port}/v1/session/create", json=body)
    assert r.status_code in (400, 500)
    assert message in r.text
