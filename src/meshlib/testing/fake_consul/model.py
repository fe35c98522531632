"""The records FakeConsul stores: nodes, service instances, health checks, KV entries, definitions.

They mirror Consul's own structs (``structs.Node``, ``NodeService``, ``HealthCheck``,
``DirEntry``, ``CheckType``) closely enough that rendering them gives Consul's JSON, while staying
plain mutable dataclasses so the state module can update them in place under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CRITICAL",
    "PASSING",
    "VALID_STATUSES",
    "WARNING",
    "CheckDef",
    "CheckRec",
    "KVEntry",
    "NodeRec",
    "ServiceDef",
    "ServiceRec",
]

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
VALID_STATUSES = frozenset({PASSING, WARNING, CRITICAL})


@dataclass(slots=True)
class CheckDef:
    """A check as registered (Consul's ``CheckType`` plus the ``CheckDefinition`` header fields)."""

    check_id: str = ""
    name: str = ""
    notes: str = ""
    status: str = ""
    output: str = ""
    service_id: str = ""
    ttl: float | None = None
    interval: float | None = None
    timeout: float | None = None
    deregister_after: float | None = None
    http: str = ""
    header: dict[str, list[str]] | None = None
    method: str = ""
    body: str = ""
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    udp: str = ""
    grpc: str = ""
    grpc_use_tls: bool = False
    h2ping: str = ""
    script_args: list[str] = field(default_factory=list)
    docker_container_id: str = ""
    shell: str = ""
    alias_node: str = ""
    alias_service: str = ""
    os_service: str = ""
    type_hint: str = ""

    def _interval_kind(self) -> bool:
        return bool(
            self.script_args
            or self.http
            or self.tcp
            or self.udp
            or self.grpc
            or self.h2ping
            or self.os_service
        )

    def is_empty(self) -> bool:
        """Consul ignores an embedded ``Check: {}``; this is its ``CheckType.Empty()``."""
        return not (
            self._interval_kind()
            or self.ttl
            or self.alias_service
            or self.docker_container_id
            or self.check_id
            or self.name
        )

    def check_type(self) -> str:
        """The ``Type`` Consul reports (``ttl``, ``http``, ``tcp``, ``script``, ...)."""
        if self.type_hint:
            return self.type_hint
        if self.ttl:
            return "ttl"
        kinds = (
            (self.grpc, "grpc"),
            (self.http, "http"),
            (self.tcp, "tcp"),
            (self.udp, "udp"),
            (self.alias_service, "alias"),
            (self.docker_container_id, "docker"),
            (self.script_args, "script"),
            (self.h2ping, "h2ping"),
            (self.os_service, "os_service"),
        )
        for present, name in kinds:
            if present:
                return name
        return ""

    def validate(self) -> None:
        """Consul's ``CheckType.Validate``; the ``ValueError`` text follows ``Invalid check: ``."""
        interval_kind = self._interval_kind()
        interval = self.interval or 0.0
        ttl = self.ttl or 0.0
        if interval > 0 and ttl > 0:
            raise ValueError("Interval and TTL cannot both be specified")
        if interval_kind and interval <= 0:
            raise ValueError(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
            )
        if interval_kind and self.alias_service:
            raise ValueError("Interval cannot be set for Alias checks")
        if self.alias_service and ttl > 0:
            raise ValueError("TTL must be not be set for Alias checks")
        if not interval_kind and not self.alias_service and ttl <= 0:
            raise ValueError("TTL must be > 0 for TTL checks")


@dataclass(slots=True)
class ServiceDef:
    """A service registration as decoded from the agent or catalog API."""

    name: str
    id: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    weights: tuple[int, int] = (1, 1)
    tagged_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    enable_tag_override: bool = False
    kind: str = ""
    proxy: dict[str, Any] | None = None
    connect: dict[str, Any] | None = None
    socket_path: str = ""
    locality: dict[str, Any] | None = None
    checks: list[CheckDef] = field(default_factory=list)


@dataclass(slots=True)
class NodeRec:
    """A catalog node (``structs.Node``)."""

    name: str
    node_id: str
    address: str
    datacenter: str
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass(slots=True)
class ServiceRec:
    """One service instance on one node (``structs.NodeService`` plus its node name)."""

    node: str
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    weights: tuple[int, int] = (1, 1)
    tagged_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    enable_tag_override: bool = False
    kind: str = ""
    proxy: dict[str, Any] | None = None
    connect: dict[str, Any] | None = None
    socket_path: str = ""
    locality: dict[str, Any] | None = None
    create_index: int = 0
    modify_index: int = 0


@dataclass(slots=True)
class CheckRec:
    """One health check (``structs.HealthCheck``) plus the runtime state TTL expiry needs."""

    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    type: str = ""
    definition: CheckDef | None = None
    create_index: int = 0
    modify_index: int = 0
    ttl_deadline: float | None = None
    ttl_generation: int = 0
    critical_since: float | None = None
    runnable: bool = False

    @property
    def ttl(self) -> float | None:
        """The TTL in seconds for TTL checks, else None."""
        return self.definition.ttl if self.definition is not None else None


@dataclass(slots=True)
class KVEntry:
    """One key (``structs.DirEntry``); ``value`` None is how Consul stores an empty value."""

    key: str
    value: bytes | None
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    lock_index: int = 0
    session: str | None = None
    """The session holding the key's lock, if any."""
