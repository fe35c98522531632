"""Consul: settings by the Go client's rules, its HTTP client, discovery watches and registration.

The only owner of py-consul. ``settings``/``env`` resolve ``CONSUL_*`` and ``MESH_CONSUL_*``
(from a mapping handed in; only ``config`` reads the environment), ``http`` gives py-consul an
httpx-based client, ``parse`` validates registry answers, ``discovery`` watches services with
blocking queries, ``service``/``registrar`` register this process. Imports L0 modules and
``discovery``: L1.
"""

from typing import Any

from meshlib import lazy

# Imported on first use: ``import meshlib`` needs the settings, not the watches, the
# registrars or py-consul.
_EXPORTS = {
    "AsyncConsulHTTP": "http",
    "ConsulDiscovery": "discovery",
    "ConsulOptions": "settings",
    "ConsulSettings": "settings",
    "ParsedEntries": "parse",
    "ServiceRegistration": "service",
    "SyncConsulHTTP": "http",
    "aggregated_status": "parse",
    "async_consul": "http",
    "consul_options_from_env": "env",
    "consul_settings_from_env": "env",
    "parse_health_entries": "parse",
    "registration_from_env": "env",
    "ssl_context_for": "http",
    "sync_consul": "http",
    "valid_service_name": "parse",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
