"""meshlib: a service mesh as a Python library.

``import meshlib`` and send outbound HTTP through ``meshlib.AsyncMeshClient`` (or the sync
``MeshClient``), ordinary httpx clients whose mesh-service URLs (``http://users/...``) get
discovery, P2C Peak-EWMA load balancing and per-endpoint load tracking in-process, with no
sidecar. Configuration comes from ``MESH_*`` environment variables (see docs/configuration.md).
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from meshlib.accrual.health import AccrualPolicy
from meshlib.classify import ResponseClass, default_classifier
from meshlib.client import AsyncMeshClient, MeshClient
from meshlib.config import MeshConfig
from meshlib.consul.settings import ConsulOptions, ConsulSettings
from meshlib.discovery import Discovery, Resolution, StaticDiscovery, Target
from meshlib.endpoint import Endpoint
from meshlib.errors import (
    ConfigError,
    DeadlineExceeded,
    DiscoveryError,
    MeshError,
    NoEndpointsAvailable,
    RateLimited,
)
from meshlib.limit.adaptive import AdaptivePolicy
from meshlib.limit.limits import LimitPolicy
from meshlib.outbound import outbound
from meshlib.retry.budget import BudgetPolicy, RetryBudget
from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy
from meshlib.retry.policy import RetryPolicy
from meshlib.routing.locality import LocalityPolicy
from meshlib.scope.context import DEADLINE_HEADER, CallPolicy
from meshlib.transport import AsyncMeshTransport, MeshTransport

__all__ = [
    "DEADLINE_HEADER",
    "AccrualPolicy",
    "AdaptivePolicy",
    "AdmissionPolicy",
    "AsyncMeshClient",
    "AsyncMeshTransport",
    "AsyncRegistrar",
    "BudgetPolicy",
    "CallPolicy",
    "ConfigError",
    "ConnectIdentity",
    "ConsulDiscovery",
    "ConsulOptions",
    "ConsulSettings",
    "DeadlineExceeded",
    "Discovery",
    "DiscoveryError",
    "Endpoint",
    "HedgeBudgetPolicy",
    "HedgePolicy",
    "LimitPolicy",
    "LocalityPolicy",
    "MeshASGIMiddleware",
    "MeshClient",
    "MeshConfig",
    "MeshError",
    "MeshTransport",
    "MeshWSGIMiddleware",
    "NoEndpointsAvailable",
    "RateLimited",
    "Registrar",
    "Resolution",
    "ResponseClass",
    "RetryBudget",
    "RetryPolicy",
    "ServiceRegistration",
    "StaticDiscovery",
    "Target",
    "connect_identity",
    "consul_lifespan",
    "default_classifier",
    "outbound",
]

__version__ = "0.1.0"

_SUBMODULES = frozenset({"admin", "telemetry", "testing"})
# Public names whose modules a static-discovery service never needs: Consul's watches, the
# registrars (with their loop, signal handling and py-consul) and Connect (py-consul and the TLS
# machinery) load when first named.
_LAZY = {
    "ConsulDiscovery": "meshlib.consul.discovery",
    "AsyncRegistrar": "meshlib.registration",
    "Registrar": "meshlib.registration",
    "consul_lifespan": "meshlib.registration",
    "ConnectIdentity": "meshlib.identity",
    "connect_identity": "meshlib.identity",
    # and what only a server needs: the inbound middleware and its admission policy
    "AdmissionPolicy": "meshlib.limit.admission",
    "MeshASGIMiddleware": "meshlib.middleware",
    "MeshWSGIMiddleware": "meshlib.middleware",
    "ServiceRegistration": "meshlib.consul.service",
}

if TYPE_CHECKING:
    from meshlib.consul.discovery import ConsulDiscovery
    from meshlib.consul.service import ServiceRegistration
    from meshlib.identity import ConnectIdentity, connect_identity
    from meshlib.limit.admission import AdmissionPolicy
    from meshlib.middleware import MeshASGIMiddleware, MeshWSGIMiddleware
    from meshlib.registration import AsyncRegistrar, Registrar, consul_lifespan


def __getattr__(name: str) -> Any:
    """``meshlib.admin`` (and ``telemetry``, ``testing``) after a bare ``import meshlib``: the
    submodules that the first request does not need are imported on first use, and so are
    the Consul, registration and Connect classes."""
    if name in _SUBMODULES:
        return importlib.import_module(f"meshlib.{name}")
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'meshlib' has no attribute {name!r}")


# A library never configures logging; it only makes sure "No handlers" is never printed.
logging.getLogger("meshlib").addHandler(logging.NullHandler())
