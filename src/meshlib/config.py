"""Configuration: the one place that reads ``os.environ``, validated up front.

``MeshConfig.from_env()`` turns ``MESH_*`` variables (and, for the discovery choice, the presence
of ``CONSUL_HTTP_ADDR``) into a frozen, validated ``MeshConfig``. A bad value fails at
construction with a ``ConfigError`` that names the variable, the value it got and what it
accepts, so a typo in a deployment fails at start, not at the first request. Values of variables
that may hold secrets are never echoed. Every variable is documented in docs/configuration.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from meshlib.balancer import BALANCERS
from meshlib.discovery.static import parse_services
from meshlib.endpoint import Endpoint
from meshlib.errors import ConfigError

__all__ = ["ENGINES", "MeshConfig", "parse_duration"]

ENGINES = ("fast", "httpx")
_DISCOVERIES = ("static", "consul")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SECRET_HINTS = ("TOKEN", "AUTH", "PASSWORD", "SECRET", "KEY")


def _shown(name: str, value: str) -> str:
    """The value as it may appear in an error: secrets are replaced, never echoed."""
    if any(h in name.upper() for h in _SECRET_HINTS):
        return "<redacted>"
    return repr(value)


def parse_duration(name: str, value: str) -> float:
    """Seconds from ``"10"``, ``"0.5"``, ``"250ms"``, ``"10s"``, ``"1m"`` or ``"1h"``."""
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(
            f"{name}={_shown(name, value)} is not a duration; use seconds (10, 0.5) "
            "or a number with a unit (250ms, 10s, 1m, 1h)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def _parse_static_endpoints(name: str, value: str) -> dict[str, tuple[Endpoint, ...]]:
    """``users=127.0.0.1:8001,127.0.0.1:8002;orders=10.0.0.5:80``."""
    data: dict[str, list[str]] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        service, sep, endpoints = part.partition("=")
        if not sep or not service.strip():
            raise ConfigError(
                f"{name}: entry {part.strip()!r} must look like service=host:port[,host:port]; "
                "separate services with ';' (e.g. users=127.0.0.1:8001;orders=127.0.0.1:9000)"
            )
        data[service.strip()] = [e for e in endpoints.split(",") if e.strip()]
    try:
        return parse_services(data, name)
    except ValueError as exc:
        raise ConfigError(f"{exc} (expected service=host:port[,host:port];...)") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class MeshConfig:
    """Everything meshlib can be told; construct directly or with ``from_env``."""

    discovery: str = "static"
    """``static`` or ``consul`` (``MESH_DISCOVERY``)."""
    static_endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    """Declared services (``MESH_STATIC_ENDPOINTS``)."""
    static_file: str | None = None
    """JSON or TOML endpoints file, watched for changes (``MESH_STATIC_FILE``)."""
    static_poll_interval: float = 1.0
    """How often the file's mtime is checked, at most (``MESH_STATIC_POLL_INTERVAL``)."""
    balancer: str = "p2c-peak-ewma"
    """``p2c-peak-ewma``, ``p2c-least-loaded`` or ``round-robin`` (``MESH_BALANCER``)."""
    ewma_decay: float = 10.0
    """Peak-EWMA decay time in seconds (``MESH_EWMA_DECAY``)."""
    ewma_default_rtt: float = 0.030
    """Latency assumed for a new endpoint (``MESH_EWMA_DEFAULT_RTT``)."""
    passthrough_hosts: tuple[str, ...] = ()
    """Single-label hosts kept out of the mesh (``MESH_PASSTHROUGH_HOSTS``)."""
    consul_domain: str = "consul"
    """The DNS domain of Consul-form names (``MESH_CONSUL_DOMAIN``)."""
    engine: str = "fast"
    """Inner HTTP engine for mesh endpoints: ``fast`` or ``httpx`` (``MESH_ENGINE``)."""

    def __post_init__(self) -> None:
        _one_of("MESH_DISCOVERY", self.discovery, _DISCOVERIES)
        _one_of("MESH_BALANCER", self.balancer, BALANCERS)
        _one_of("MESH_ENGINE", self.engine, ENGINES)
        _positive("MESH_STATIC_POLL_INTERVAL", self.static_poll_interval)
        _positive("MESH_EWMA_DECAY", self.ewma_decay)
        _positive("MESH_EWMA_DEFAULT_RTT", self.ewma_default_rtt)
        if self.discovery == "consul":
            raise ConfigError(
                "MESH_DISCOVERY='consul' is not available in this release: Consul discovery "
                "is not built yet. Use MESH_DISCOVERY=static with MESH_STATIC_ENDPOINTS or "
                "MESH_STATIC_FILE (and unset CONSUL_HTTP_ADDR, which selects consul by default)."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MeshConfig:
        """Read ``MESH_*`` (and ``CONSUL_HTTP_ADDR`` for the default discovery)."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        default_discovery = "consul" if env.get("CONSUL_HTTP_ADDR") else "static"
        kw["discovery"] = env.get("MESH_DISCOVERY", default_discovery).strip().lower()
        if "MESH_STATIC_ENDPOINTS" in env:
            kw["static_endpoints"] = _parse_static_endpoints(
                "MESH_STATIC_ENDPOINTS", env["MESH_STATIC_ENDPOINTS"]
            )
        if env.get("MESH_STATIC_FILE"):
            kw["static_file"] = env["MESH_STATIC_FILE"]
        for var, attr in _DURATIONS.items():
            if var in env:
                kw[attr] = parse_duration(var, env[var])
        for var, attr in _CHOICES.items():
            if var in env:
                kw[attr] = env[var].strip().lower()
        if "MESH_PASSTHROUGH_HOSTS" in env:
            kw["passthrough_hosts"] = tuple(
                h.strip().lower() for h in env["MESH_PASSTHROUGH_HOSTS"].split(",") if h.strip()
            )
        if "MESH_CONSUL_DOMAIN" in env:
            kw["consul_domain"] = env["MESH_CONSUL_DOMAIN"].strip().lower() or "consul"
        return cls(**kw)

    def items(self) -> Iterator[tuple[str, object]]:
        """(field, value) pairs, for ``python -m meshlib config``."""
        for f in fields(self):
            yield f.name, getattr(self, f.name)


_DURATIONS = {
    "MESH_STATIC_POLL_INTERVAL": "static_poll_interval",
    "MESH_EWMA_DECAY": "ewma_decay",
    "MESH_EWMA_DEFAULT_RTT": "ewma_default_rtt",
}
_CHOICES = {"MESH_BALANCER": "balancer", "MESH_ENGINE": "engine"}


def _one_of(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(
            f"{name}={_shown(name, value)} is not accepted; use one of {', '.join(accepted)}"
        )


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a positive finite number of seconds")
