"""Consul: settings by the Go client's rules, its HTTP client, discovery watches and registration.

The only owner of py-consul. ``settings``/``env`` resolve ``CONSUL_*`` and ``MESH_CONSUL_*``
(from a mapping handed in; only ``config`` reads the environment), ``http`` gives py-consul an
httpx-based client, ``parse`` validates registry answers, ``discovery`` watches services with
blocking queries, ``service``/``registrar`` register this process. Imports L0 modules and
``discovery``: L1.
"""

from typing import Any

from meshlib.consul.discovery import (
    ConsulDiscovery,
    ConsulOptions,
)
from meshlib.consul.env import (
    consul_options_from_env,
    consul_settings_from_env,
    registration_from_env,
)
from meshlib.consul.parse import (
    ParsedEntries,
    aggregated_status,
    parse_health_entries,
    valid_service_name,
)
from meshlib.consul.service import (
    ServiceRegistration,
)
from meshlib.consul.settings import (
    ConsulSettings,
)

__all__ = [
    "AsyncConsulHTTP",
    "ConsulDiscovery",
    "ConsulOptions",
    "ConsulSettings",
    "ParsedEntries",
    "ServiceRegistration",
    "SyncConsulHTTP",
    "aggregated_status",
    "async_consul",
    "consul_options_from_env",
    "consul_settings_from_env",
    "parse_health_entries",
    "registration_from_env",
    "ssl_context_for",
    "sync_consul",
    "valid_service_name",
]

_HTTP = frozenset(
    {"AsyncConsulHTTP", "SyncConsulHTTP", "async_consul", "ssl_context_for", "sync_consul"}
)


def __getattr__(name: str) -> Any:
    # ``http`` imports py-consul (and with it ``requests``), which ``import meshlib`` should not
    # pay for: it is needed only once Consul discovery or registration is built.
    if name in _HTTP:
        from meshlib.consul import http

        return getattr(http, name)
    raise AttributeError(f"module 'meshlib.consul' has no attribute {name!r}")
