"""Configuration from the environment: one test per kind of variable, errors that help."""

import pytest

from meshlib import ConfigError, MeshConfig
from meshlib.config import parse_duration


def test_defaults_without_environment() -> None:
    c = MeshConfig.from_env({})
    assert c.discovery == "static"
    assert c.balancer == "p2c-peak-ewma"
    assert c.ewma_decay == 10.0
    assert c.ewma_default_rtt == pytest.approx(0.030)
    assert c.engine == "fast"


def test_static_endpoints_variable() -> None:
    c = MeshConfig.from_env(
        {"MESH_STATIC_ENDPOINTS": "users=127.0.0.1:8001,127.0.0.1:8002; orders=10.0.0.5:80;"}
    )
    assert [e.address for e in c.static_endpoints["users"]] == ["127.0.0.1:8001", "127.0.0.1:8002"]
    assert [e.address for e in c.static_endpoints["orders"]] == ["10.0.0.5:80"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("users", "must look like service=host:port"),
        ("users=127.0.0.1", "must look like host:port"),
        ("users=127.0.0.1:99999", r"within \[1, 65535\]"),
        ("127.0.0.1=127.0.0.1:80", "cannot be a service name"),
    ],
)
def test_bad_static_endpoints_name_variable_and_value(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="MESH_STATIC_ENDPOINTS") as info:
        MeshConfig.from_env({"MESH_STATIC_ENDPOINTS": value})
    assert info.match(message)


def test_choice_variable_lists_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as info:
        MeshConfig.from_env({"MESH_BALANCER": "fastest"})
    text = str(info.value)
    assert "MESH_BALANCER='fastest'" in text
    assert "p2c-peak-ewma" in text
    assert "round-robin" in text


def test_choice_variables_are_case_insensitive() -> None:
    assert MeshConfig.from_env({"MESH_BALANCER": " Round-Robin "}).balancer == "round-robin"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("0.5", 0.5), ("250ms", 0.25), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0)],
)
def test_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration("MESH_EWMA_DECAY", text) == pytest.approx(seconds)


def test_bad_duration_names_variable_value_and_forms() -> None:
    with pytest.raises(ConfigError) as info:
        MeshConfig.from_env({"MESH_EWMA_DECAY": "soon"})
    assert "MESH_EWMA_DECAY='soon'" in str(info.value)
    assert "250ms" in str(info.value)


def test_zero_duration_is_refused() -> None:
    with pytest.raises(ConfigError, match="MESH_EWMA_DEFAULT_RTT"):
        MeshConfig.from_env({"MESH_EWMA_DEFAULT_RTT": "0"})


def test_list_variable() -> None:
    c = MeshConfig.from_env({"MESH_PASSTHROUGH_HOSTS": "db, Redis ,,"})
    assert c.passthrough_hosts == ("db", "redis")


def test_consul_selected_by_consul_http_addr_fails_clearly_until_built() -> None:
    with pytest.raises(ConfigError, match="MESH_DISCOVERY='consul'") as info:
        MeshConfig.from_env({"CONSUL_HTTP_ADDR": "127.0.0.1:8500"})
    assert "MESH_DISCOVERY=static" in str(info.value)
    assert (
        MeshConfig.from_env(
            {"CONSUL_HTTP_ADDR": "127.0.0.1:8500", "MESH_DISCOVERY": "static"}
        ).discovery
        == "static"
    )


def test_secret_values_are_never_echoed() -> None:
    from meshlib.config import _shown

    assert _shown("CONSUL_HTTP_TOKEN", "s3cr3t") == "<redacted>"
    with pytest.raises(ConfigError) as info:
        parse_duration("MESH_ADMIN_TOKEN_TTL", "s3cr3t")
    assert "s3cr3t" not in str(info.value)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="MESH_ENGINE"):
        MeshConfig(engine="curl")
    with pytest.raises(ConfigError, match="MESH_EWMA_DECAY"):
        MeshConfig(ewma_decay=-1)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
