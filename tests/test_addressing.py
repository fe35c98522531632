"""Which hosts are mesh services: the documented rules, one by one."""

import pytest

from meshlib.discovery.base import Target
from meshlib.routing.addressing import Addressing


@pytest.fixture
def addressing() -> Addressing:
    declared = {"users.internal", "billing"}
    return Addressing(passthrough=("db", "Redis"), declares=declared.__contains__)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("users", Target("users")),
        ("USERS", Target("users")),
        ("users.service.consul", Target("users")),
        ("v2.users.service.consul", Target("users", tag="v2")),
        ("users.service.eu1.consul", Target("users", dc="eu1")),
        ("v2.users.service.eu1.consul", Target("users", tag="v2", dc="eu1")),
        ("users.internal", Target("users.internal")),
        ("billing", Target("billing")),
    ],
)
def test_mesh_names(addressing: Addressing, host: str, expected: Target) -> None:
    assert addressing.target(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.5",
        "localhost",
        "app.localhost",
        "api.example.com",
        "db",
        "redis",
        "a.b.c.service.consul",
        "service.consul",
        "users.other.internal",
    ],
)
def test_pass_through_hosts(addressing: Addressing, host: str) -> None:
    assert addressing.target(host) is None


def test_declared_names_follow_reloads() -> None:
    declared = {"users.internal"}
    a = Addressing(declares=declared.__contains__)
    assert a.target("users.internal") == Target("users.internal")
    declared.clear()
    assert a.target("users.internal") is None
    declared.add("users.internal")
    assert a.target("users.internal") == Target("users.internal")


def test_custom_consul_domain() -> None:
    a = Addressing(consul_domain="mesh")
    assert a.target("users.service.mesh") == Target("users")
    assert a.target("users.service.consul") is None
