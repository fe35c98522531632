"""Service discovery: where a service's endpoints come from (static lists, files, Consul)."""

from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.discovery.static import StaticDiscovery

__all__ = ["Discovery", "Resolution", "StaticDiscovery", "Target"]
