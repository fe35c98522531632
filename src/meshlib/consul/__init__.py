"""Consul: settings by the Go client's rules, its HTTP client, discovery watches and registration.

The only owner of py-consul. ``settings``/``env`` resolve ``CONSUL_*`` and ``MESH_CONSUL_*``
(from a mapping handed in; only ``config`` reads the environment), ``http`` gives py-consul an
httpx-based client, ``parse`` validates registry answers, ``discovery`` watches services with
blocking queries, ``service``/``registrar`` register this process. Imports L0 modules and
``discovery``: L1.
"""

from meshlib.consul.discovery import (
    ConsulDiscovery,
    ConsulOptions,
)
from meshlib.consul.env import (
    consul_options_from_env,
    consul_settings_from_env,
    registration_from_env,
)
from meshlib.consul.http import (
    AsyncConsulHTTP,
    SyncConsulHTTP,
    async_consul,
    ssl_context_for,
    sync_consul,
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
