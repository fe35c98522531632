"""One target's live endpoint set: what the router hands the pipeline for each call."""

from __future__ import annotations

from typing import Any

from meshlib.balance.balancer import EndpointSet
from meshlib.discovery.base import Resolution, Target

__all__ = ["ServiceState"]


class ServiceState:
    """One target's live endpoint set, rebuilt only when discovery hands over a new snapshot
    (or, for a subset, when the chain or the service's set changes)."""

    __slots__ = ("balancer", "eps", "label", "resolution", "target")

    def __init__(
        self, target: Target, resolution: Resolution, eps: EndpointSet, balancer: Any = None
    ) -> None:
        self.target = target
        self.label = str(target)
        """The target as text (``users``, ``users (subset v2)``): made once, read per call."""
        self.resolution = resolution
        self.eps = eps
        self.balancer = balancer
        """A balancer of its own (a resolver's ``LoadBalancer`` policy), else the router's."""
