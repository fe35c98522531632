"""Every HTTP route FakeConsul serves, gathered from the handler modules in one list."""

from __future__ import annotations

from . import (
    handlers_agent,
    handlers_catalog,
    handlers_config,
    handlers_connect,
    handlers_health,
    handlers_kv,
)
from .endpoint import Route

__all__ = ["ROUTES"]

ROUTES: list[Route] = [
    *handlers_agent.ROUTES,
    *handlers_catalog.ROUTES,
    *handlers_health.ROUTES,
    *handlers_kv.ROUTES,
    *handlers_connect.ROUTES,
    *handlers_config.ROUTES,
]
