"""What a service announces about itself in Consul (``MESH_SERVICE_*``), validated.

Kept apart from the registrars so that ``config`` can build it from the environment without
depending on the code that talks to Consul.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServiceRegistration"]


def _go_duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True, kw_only=True)
class ServiceRegistration:
    """What to announce (``MESH_SERVICE_*``)."""

    name: str
    port: int
    id: str | None = None
    address: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    weights: tuple[int, int] = (1, 1)
    check: str = "ttl"
    """``ttl`` (meshlib heartbeats), ``http`` (Consul polls ``http_url``) or ``none``."""
    ttl: float = 10.0
    http_url: str | None = None
    interval: float = 10.0
    deregister_after: float = 60.0
    connect_native: bool = False
    """Registered as Connect-native (``MESH_SERVICE_CONNECT_NATIVE``): it serves Connect mutual
    TLS itself, so Connect clients and sidecars call it directly (``Connect.Native``)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("service name must not be empty (MESH_SERVICE_NAME)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"service port must be within [1, 65535], got {self.port}")
        if self.check not in ("ttl", "http", "none"):
            raise ValueError(f"check must be ttl, http or none, got {self.check!r}")
        if self.check == "http" and not (self.http_url or "").startswith(("http://", "https://")):
            raise ValueError("an http check needs http_url (MESH_SERVICE_CHECK_HTTP) as http(s)://")
        if self.ttl < 1.0:
            raise ValueError(f"check ttl must be at least 1s, got {self.ttl:g}s")
        if self.weights[0] < 1 or self.weights[1] < 0:
            raise ValueError(f"weights must be passing >= 1, warning >= 0, got {self.weights}")

    @property
    def service_id(self) -> str:
        return self.id or f"{self.name}-{self.address or 'local'}-{self.port}"

    @property
    def check_id(self) -> str:
        return f"service:{self.service_id}"

    def check_definition(self) -> dict[str, Any] | None:
        after = _go_duration(self.deregister_after)
        if self.check == "ttl":
            return {"TTL": _go_duration(self.ttl), "DeregisterCriticalServiceAfter": after}
        if self.check == "http":
            return {
                "HTTP": self.http_url,
                "Interval": _go_duration(self.interval),
                "DeregisterCriticalServiceAfter": after,
            }
        return None

    def register_kwargs(self) -> dict[str, Any]:
        """Arguments for py-consul's ``agent.service.register``."""
        return {
            "name": self.name,
            "service_id": self.service_id,
            "address": self.address or None,
            "port": self.port,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "weights": {"Passing": self.weights[0], "Warning": self.weights[1]},
            "check": self.check_definition(),
            **({"connect": {"Native": True}} if self.connect_native else {}),
        }
