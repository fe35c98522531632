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


def test_consul_is_the_default_when_consul_http_addr_is_set() -> None:
    c = MeshConfig.from_env({"CONSUL_HTTP_ADDR": "127.0.0.1:8500"})
    assert c.discovery == "consul"
    assert c.consul.address == "http://127.0.0.1:8500"
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


def test_resilience_variables() -> None:
    c = MeshConfig.from_env(
        {
            "MESH_MAX_ATTEMPTS": "4",
            "MESH_RETRY_BACKOFF_BASE": "10ms",
            "MESH_RETRY_BACKOFF_MAX": "1s",
            "MESH_RETRY_BUDGET_PERCENT": "10",
            "MESH_RETRY_BUDGET_MIN_PER_SEC": "5",
            "MESH_ACCRUAL_CONSECUTIVE_FAILURES": "7",
            "MESH_ACCRUAL_SUCCESS_RATE": "90",
            "MESH_MAX_EJECTION_PERCENT": "25",
            "MESH_TIMEOUT": "2s",
            "MESH_PER_TRY_TIMEOUT": "500ms",
            "MESH_IDEMPOTENCY_KEY": "yes",
            "MESH_PROPAGATE_DEADLINE": "off",
        }
    )
    assert c.retry.max_attempts == 4
    assert c.budget.percent == pytest.approx(0.1)
    assert c.budget.min_per_sec == 5
    assert c.accrual.consecutive_failures == 7
    assert c.accrual.success_rate == pytest.approx(0.9)
    assert c.accrual.max_ejection_percent == 25
    assert c.timeout == 2.0
    assert c.per_try_timeout == 0.5
    assert c.idempotency_key is True
    assert c.propagate_deadline is False


def test_limits_variables() -> None:
    c = MeshConfig.from_env(
        {
            "MESH_RATE_LIMIT": "users=100:200;orders=20/s",
            "MESH_MAX_IN_FLIGHT": "users=64",
            "MESH_LIMIT_WAIT": "false",
        }
    )
    assert c.limits["users"].rate == 100
    assert c.limits["users"].burst == 200
    assert c.limits["users"].max_in_flight == 64
    assert c.limits["orders"].rate == 20
    assert c.limits["orders"].wait is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MESH_MAX_ATTEMPTS": "zero"}, "MESH_MAX_ATTEMPTS='zero' is not an integer"),
        ({"MESH_MAX_ATTEMPTS": "11"}, r"within \[1, 10\]"),
        ({"MESH_RETRY_BUDGET_PERCENT": "120"}, r"percent must be within \[0, 100\], got 120"),
        ({"MESH_IDEMPOTENCY_KEY": "maybe"}, "MESH_IDEMPOTENCY_KEY='maybe' is not a boolean"),
        ({"MESH_RATE_LIMIT": "users"}, "must look like service=value"),
        ({"MESH_RATE_LIMIT": "users=-3"}, "rate limit must be a positive number"),
        ({"MESH_RETRY_BACKOFF_BASE": "1s", "MESH_RETRY_BACKOFF_MAX": "10ms"}, "must be >="),
        ({"MESH_ACCRUAL_SUCCESS_RATE": "150"}, "success_rate"),
    ],
)
def test_resilience_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MeshConfig.from_env(env)


def test_optional_durations_accept_none() -> None:
    assert MeshConfig.from_env({"MESH_TIMEOUT": "none"}).timeout is None
