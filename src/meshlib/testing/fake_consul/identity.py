"""Who the fake agent is, and what a catalog registration carries: the agent's fixed names.

The maintenance check IDs and default reasons are Consul's own strings (agent/agent.go), so
clients that match on them see what a real agent sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .model import CheckDef, ServiceDef

__all__ = [
    "CONSUL_SERVICE_ID",
    "DEFAULT_NODE_MAINT_REASON",
    "DEFAULT_SERVICE_MAINT_REASON",
    "NODE_MAINT_CHECK_ID",
    "RUNNABLE_TYPES",
    "SERF_CHECK_ID",
    "SERVICE_MAINT_PREFIX",
    "AgentIdentity",
    "CatalogRegistration",
]

SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_CHECK_ID = "_node_maintenance"
DEFAULT_SERVICE_MAINT_REASON = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
DEFAULT_NODE_MAINT_REASON = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)
SERF_CHECK_ID = "serfHealth"
# The check kinds FakeConsul's agent actually executes (see runner.py).
RUNNABLE_TYPES = frozenset({"http", "tcp"})
CONSUL_SERVICE_ID = "consul"


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who the fake agent is: its datacenter, node and the Consul version it reports."""

    datacenter: str
    node_name: str
    node_address: str
    node_id: str
    version: str
    node_meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CatalogRegistration:
    """A decoded ``PUT /v1/catalog/register`` body."""

    node: str
    address: str = ""
    node_id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] | None = None
    node_meta: dict[str, str] | None = None
    service: ServiceDef | None = None
    checks: list[CheckDef] = field(default_factory=list)
    skip_node_update: bool = False
