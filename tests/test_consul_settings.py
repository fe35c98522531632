"""CONSUL_* variables by the Go client's rules, and secrets that never show."""

import logging
from pathlib import Path

import pytest

from meshlib import ConfigError, MeshConfig


def _consul(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return MeshConfig.from_env({"MESH_DISCOVERY": "consul", **env}).consul


@pytest.mark.parametrize(
    ("addr", "address"),
    [
        ("127.0.0.1:8500", "http://127.0.0.1:8500"),
        ("http://consul.local:8500", "http://consul.local:8500"),
        ("https://consul.local:8501", "https://consul.local:8501"),
        ("https://consul.local", "https://consul.local:443"),
        ("consul.local", "http://consul.local:80"),
        ("unix:///run/consul.sock", "unix:///run/consul.sock"),
        ("[::1]:8500", "http://[::1]:8500"),
    ],
)
def test_http_addr_forms(addr: str, address: str) -> None:
    assert _consul({"CONSUL_HTTP_ADDR": addr}).address == address


def test_default_address() -> None:
    assert _consul({}).address == "http://127.0.0.1:8500"


def test_ssl_variable_applies_only_without_a_scheme() -> None:
    assert _consul({"CONSUL_HTTP_ADDR": "c:8501", "CONSUL_HTTP_SSL": "true"}).scheme == "https"
    assert (
        _consul({"CONSUL_HTTP_ADDR": "http://c:8500", "CONSUL_HTTP_SSL": "true"}).scheme == "http"
    )


@pytest.mark.parametrize("addr", ["ftp://c:21", "c:notaport", "unix://", "c:8500/path"])
def test_bad_addresses_are_config_errors(addr: str) -> None:
    with pytest.raises(ConfigError, match="CONSUL_HTTP_ADDR"):
        _consul({"CONSUL_HTTP_ADDR": addr})


def test_token_file_wins_over_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  file-secret\n")
    s = _consul({"CONSUL_HTTP_TOKEN": "env-secret", "CONSUL_HTTP_TOKEN_FILE": str(f)})
    assert s.token == "file-secret"
    assert s.token_source == "CONSUL_HTTP_TOKEN_FILE"
    assert _consul({"CONSUL_HTTP_TOKEN": "env-secret"}).token == "env-secret"


def test_unreadable_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CONSUL_HTTP_TOKEN_FILE") as info:
        _consul({"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "missing")})
    assert "readable file" in str(info.value)


def test_secrets_never_appear_in_repr_or_description() -> None:
    s = _consul({"CONSUL_HTTP_TOKEN": "s3cr3t-token", "CONSUL_HTTP_AUTH": "ops:p4ssw0rd"})
    for text in (
        repr(s),
        str(s.describe()),
        repr(
            MeshConfig.from_env({"MESH_DISCOVERY": "consul", "CONSUL_HTTP_TOKEN": "s3cr3t-token"})
        ),
    ):
        assert "s3cr3t-token" not in text
        assert "p4ssw0rd" not in text
    assert s.http_auth_user == "ops"
    assert s.http_auth_password == "p4ssw0rd"


def test_client_cert_and_key_both_or_neither(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="both or neither"):
        _consul({"CONSUL_CLIENT_CERT": str(cert)})
    with pytest.raises(ConfigError, match="does not exist"):
        _consul({"CONSUL_CACERT": str(tmp_path / "nope.pem")})


def test_verify_off_warns(caplog: pytest.LogCaptureFixture) -> None:
    s = _consul({"CONSUL_HTTP_SSL_VERIFY": "false"})
    assert s.verify is False
    assert "not verified" in caplog.text


def test_namespace_partition_server_name() -> None:
    s = _consul(
        {
            "CONSUL_NAMESPACE": "team-a",
            "CONSUL_PARTITION": "p1",
            "CONSUL_TLS_SERVER_NAME": "consul.internal",
        }
    )
    assert (s.namespace, s.partition, s.tls_server_name) == ("team-a", "p1", "consul.internal")


def test_mesh_consul_options() -> None:
    c = MeshConfig.from_env(
        {
            "MESH_DISCOVERY": "consul",
            "MESH_CONSUL_HEALTH": "warning",
            "MESH_CONSUL_CONSISTENCY": "default",
            "MESH_CONSUL_WAIT": "30s",
            "MESH_DISCOVERY_MAX_STALENESS": "5m",
            "MESH_DISCOVERY_TIMEOUT": "2s",
        }
    )
    o = c.consul_options
    assert (o.include_warning, o.stale, o.wait, o.max_staleness, o.first_timeout) == (
        True,
        False,
        30.0,
        300.0,
        2.0,
    )
    with pytest.raises(ConfigError, match="MESH_CONSUL_HEALTH"):
        MeshConfig.from_env({"MESH_DISCOVERY": "consul", "MESH_CONSUL_HEALTH": "critical"})
    with pytest.raises(ConfigError, match="wait"):
        MeshConfig.from_env({"MESH_DISCOVERY": "consul", "MESH_CONSUL_WAIT": "11m"})


def test_service_registration_variables() -> None:
    c = MeshConfig.from_env(
        {
            "MESH_SERVICE_NAME": "orders",
            "MESH_SERVICE_PORT": "9000",
            "MESH_SERVICE_ADDRESS": "127.0.0.1",
            "MESH_SERVICE_TAGS": "v2, primary",
            "MESH_SERVICE_META": "team=core,tier=1",
            "MESH_SERVICE_WEIGHTS": "10,1",
            "MESH_SERVICE_CHECK_TTL": "15s",
        }
    )
    r = c.registration
    assert r is not None
    assert (r.name, r.port, r.tags, dict(r.meta), r.weights, r.ttl) == (
        "orders",
        9000,
        ("v2", "primary"),
        {"team": "core", "tier": "1"},
        (10, 1),
        15.0,
    )
    with pytest.raises(ConfigError, match="MESH_SERVICE_PORT"):
        MeshConfig.from_env({"MESH_SERVICE_NAME": "orders"})
    with pytest.raises(ConfigError, match="http_url"):
        MeshConfig.from_env(
            {"MESH_SERVICE_NAME": "o", "MESH_SERVICE_PORT": "1", "MESH_SERVICE_CHECK": "http"}
        )


@pytest.mark.parametrize(
    "addr",
    [
        "http://user:s3cr3t-pw@host:bad",
        "https://user:s3cr3t-pw@host:99999",
        "user:s3cr3t-pw@host:bad",
        "ftp://user:s3cr3t-pw@host:1",
        "http://user:s3cr3t-pw@host:1/path",
        "http://user:s3cr3t-pw@:1",
    ],
)
def test_bad_address_errors_never_echo_the_password(addr: str) -> None:
    with pytest.raises(ConfigError, match="CONSUL_HTTP_ADDR") as info:
        _consul({"CONSUL_HTTP_ADDR": addr})
    assert "s3cr3t-pw" not in str(info.value)
    assert "<redacted>" in str(info.value)


def test_credentials_in_the_address_become_http_auth_as_in_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="meshlib.config"):
        s = _consul({"CONSUL_HTTP_ADDR": "https://ops:p%40ss@consul.example:8501"})
    assert (s.scheme, s.host, s.port) == ("https", "consul.example", 8501)
    assert (s.http_auth_user, s.http_auth_password) == ("ops", "p@ss")
    assert "p@ss" not in repr(s)
    assert "p%40ss" not in caplog.text
    assert "CONSUL_HTTP_ADDR" in caplog.text
    # CONSUL_HTTP_AUTH wins, as an explicit Authorization header wins in Go's net/http.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshlib.config"):
        s = _consul({"CONSUL_HTTP_ADDR": "ops:hunter2@c:8500", "CONSUL_HTTP_AUTH": "admin:other"})
    assert (s.http_auth_user, s.http_auth_password) == ("admin", "other")
    assert "CONSUL_HTTP_AUTH" in caplog.text
    assert "hunter2" not in caplog.text


def test_an_address_without_a_port_means_the_scheme_default_and_says_so() -> None:
    s = _consul({"CONSUL_HTTP_ADDR": "127.0.0.1"})
    assert (s.port, s.port_implied) == (80, True)
    assert _consul({"CONSUL_HTTP_ADDR": "https://c"}).port == 443
    assert not _consul({"CONSUL_HTTP_ADDR": "127.0.0.1:8500"}).port_implied
    assert not _consul({}).port_implied
