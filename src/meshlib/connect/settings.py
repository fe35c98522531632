"""Whether and how this process speaks Consul Connect (``MESH_CONNECT_*``), validated up front.

Connect is off unless asked for. On, it needs a name to be known by (the leaf certificate is
issued for a service name, ``MESH_SERVICE_NAME`` by default) and a Consul agent to ask for
certificates and intentions, so ``config`` refuses ``MESH_CONNECT=true`` without Consul
discovery rather than failing at the first call. Services listed in ``plain`` are called the
old way, over ``/v1/health/service`` and plaintext: the escape hatch for a service that has not
joined the mesh yet, chosen per service and never by falling back silently, because a client
that drops to plaintext when Connect answers are missing is a client an attacker can downgrade.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from meshlib.errors import ConfigError

__all__ = ["ConnectSettings", "connect_settings_from_env"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectSettings:
    """This process's Connect identity and policy (``MESH_CONNECT_*``)."""

    enabled: bool = False
    """Call Consul services over Connect mutual TLS (``MESH_CONNECT``)."""
    service: str | None = None
    """The name this process's leaf certificate is issued for (``MESH_CONNECT_SERVICE``,
    default ``MESH_SERVICE_NAME``)."""
    plain: tuple[str, ...] = ()
    """Services still called without Connect (``MESH_CONNECT_PLAIN_SERVICES``)."""
    first_timeout: float = 10.0
    """How long the first leaf and roots may take (``MESH_CONNECT_FIRST_TIMEOUT``)."""
    authz_ttl: float = 5.0
    """How long an intention decision is cached per caller (``MESH_CONNECT_AUTHZ_TTL``)."""

    def __post_init__(self) -> None:
        if self.enabled and not self.service:
            raise ConfigError(
                "MESH_CONNECT=true needs the name this service's certificate is issued for: "
                "set MESH_SERVICE_NAME (or MESH_CONNECT_SERVICE)"
            )
        if self.service is not None or self.plain:
            self._check_names()
        for var, value, high in (
            ("MESH_CONNECT_FIRST_TIMEOUT", self.first_timeout, 600.0),
            ("MESH_CONNECT_AUTHZ_TTL", self.authz_ttl, 300.0),
        ):
            if not (math.isfinite(value) and 0 < value <= high):
                raise ConfigError(f"{var}={value:g}s must be within (0, {high:g}s]")

    def _check_names(self) -> None:
        # Consul's name rule lives with the registry parsers, loaded only when a name is given.
        from meshlib.consul.parse import valid_service_name

        if self.service is not None and not valid_service_name(self.service):
            raise ConfigError(
                f"MESH_CONNECT_SERVICE={self.service!r} is not a Consul service name "
                "(letters, digits, '-' and '_', starting with a letter or digit)"
            )
        for name in self.plain:
            if not valid_service_name(name):
                raise ConfigError(
                    f"MESH_CONNECT_PLAIN_SERVICES lists {name!r}, which is not a service name"
                )


def connect_settings_from_env(
    env: Mapping[str, str],
    parse_bool: Callable[[str, str], bool],
    parse_duration: Callable[[str, str], float],
) -> ConnectSettings:
    """``MESH_CONNECT*`` from ``env`` (``config`` hands in its parsers and the mapping)."""
    enabled = parse_bool("MESH_CONNECT", env["MESH_CONNECT"]) if "MESH_CONNECT" in env else False
    service = (env.get("MESH_CONNECT_SERVICE") or env.get("MESH_SERVICE_NAME") or "").strip()
    listed = env.get("MESH_CONNECT_PLAIN_SERVICES", "").split(",")
    plain = tuple(s.strip().lower() for s in listed if s.strip())
    kw: dict[str, float] = {}
    for var, attr in (
        ("MESH_CONNECT_FIRST_TIMEOUT", "first_timeout"),
        ("MESH_CONNECT_AUTHZ_TTL", "authz_ttl"),
    ):
        if env.get(var, "").strip():
            kw[attr] = parse_duration(var, env[var])
    return ConnectSettings(enabled=enabled, service=service or None, plain=plain, **kw)
