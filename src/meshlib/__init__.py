"""meshlib: a service mesh as a Python library.

``import meshlib`` and send outbound HTTP through ``meshlib.AsyncMeshClient`` (or the sync
``MeshClient``), ordinary httpx clients whose mesh-service URLs (``http://users/...``) get
discovery, P2C Peak-EWMA load balancing and per-endpoint load tracking in-process, with no
sidecar. Configuration comes from ``MESH_*`` environment variables (see docs/configuration.md).
"""

import logging

from meshlib.accrual import AccrualPolicy
from meshlib.budget import BudgetPolicy, RetryBudget
from meshlib.classify import ResponseClass, default_classifier
from meshlib.client import AsyncMeshClient, AsyncMeshTransport, MeshClient, MeshTransport
from meshlib.config import MeshConfig
from meshlib.consul_settings import ConsulSettings
from meshlib.context import DEADLINE_HEADER, CallPolicy
from meshlib.discovery import Discovery, Resolution, StaticDiscovery, Target
from meshlib.discovery.consul import ConsulDiscovery, ConsulOptions
from meshlib.endpoint import Endpoint
from meshlib.errors import (
    ConfigError,
    DeadlineExceeded,
    DiscoveryError,
    MeshError,
    NoEndpointsAvailable,
    RateLimited,
)
from meshlib.limits import LimitPolicy
from meshlib.middleware import MeshASGIMiddleware, MeshWSGIMiddleware
from meshlib.outbound import outbound
from meshlib.registration import AsyncRegistrar, Registrar, consul_lifespan
from meshlib.retry import RetryPolicy
from meshlib.service_registration import ServiceRegistration

__all__ = [
    "DEADLINE_HEADER",
    "AccrualPolicy",
    "AsyncMeshClient",
    "AsyncMeshTransport",
    "AsyncRegistrar",
    "BudgetPolicy",
    "CallPolicy",
    "ConfigError",
    "ConsulDiscovery",
    "ConsulOptions",
    "ConsulSettings",
    "DeadlineExceeded",
    "Discovery",
    "DiscoveryError",
    "Endpoint",
    "LimitPolicy",
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
    "consul_lifespan",
    "default_classifier",
    "outbound",
]

__version__ = "0.1.0"

# A library never configures logging; it only makes sure "No handlers" is never printed.
logging.getLogger("meshlib").addHandler(logging.NullHandler())
