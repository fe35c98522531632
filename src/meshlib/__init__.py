"""meshlib: a service mesh as a Python library.

``import meshlib`` and send outbound HTTP through ``meshlib.AsyncMeshClient`` (or the sync
``MeshClient``), ordinary httpx clients whose mesh-service URLs (``http://users/...``) get
discovery, P2C Peak-EWMA load balancing and per-endpoint load tracking in-process, with no
sidecar. Configuration comes from ``MESH_*`` environment variables (see docs/configuration.md).
"""

import logging

from meshlib.classify import ResponseClass, default_classifier
from meshlib.client import AsyncMeshClient, AsyncMeshTransport, MeshClient, MeshTransport
from meshlib.config import MeshConfig
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

__all__ = [
    "AsyncMeshClient",
    "AsyncMeshTransport",
    "ConfigError",
    "DeadlineExceeded",
    "Discovery",
    "DiscoveryError",
    "Endpoint",
    "MeshClient",
    "MeshConfig",
    "MeshError",
    "MeshTransport",
    "NoEndpointsAvailable",
    "RateLimited",
    "Resolution",
    "ResponseClass",
    "StaticDiscovery",
    "Target",
    "default_classifier",
]

__version__ = "0.1.0"

# A library never configures logging; it only makes sure "No handlers" is never printed.
logging.getLogger("meshlib").addHandler(logging.NullHandler())
