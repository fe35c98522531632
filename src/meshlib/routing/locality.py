"""Zone-aware routing: prefer the caller's zone while it is healthy, spill over when it is not.

The anchors are Envoy's zone-aware routing and gRPC's locality weights: traffic stays in the
caller's zone (cheaper, faster, and what survives a cross-zone partition) as long as that zone
can take it. meshlib's rule, checked at every pick so it reacts within one request:

* an endpoint is in the caller's zone when its metadata ``key`` (``MESH_ZONE_KEY``, default
  ``zone``; Consul's ``Service.Meta``, else ``Node.Meta``; ``meta``/``node_meta`` in a static
  file) equals ``MESH_ZONE``;
* the pick is made among the local endpoints while at least ``min_healthy`` of them
  (``MESH_ZONE_MIN_HEALTHY``, default 0.5, and never fewer than one) are available (not
  ejected by failure accrual) and not overloaded (no 429/503 ``Retry-After`` hold);
* otherwise it is made among all endpoints of every zone ("spill-over"), so a failing zone
  sheds its load at once and takes it back as it recovers.

A service with no endpoint in the caller's zone is balanced over all of them. ``mesh_state()``
shows each service's zone split: endpoints per zone, picks kept local and spilled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.balance.balancer import EndpointSet
from meshlib.discovery.base import Target
from meshlib.endpoint import Endpoint
from meshlib.routing.state import ServiceState

__all__ = ["LocalityPolicy", "Zones", "locality_from_env"]


@dataclass(frozen=True, kw_only=True)
class LocalityPolicy:
    """The caller's zone, the metadata key naming an endpoint's zone, the spill threshold."""

    zone: str
    key: str = "zone"
    min_healthy: float = 0.5

    def __post_init__(self) -> None:
        if not self.zone or not self.key:
            raise ValueError("a locality policy needs a zone and a metadata key")
        if not (math.isfinite(self.min_healthy) and 0 < self.min_healthy <= 1):
            raise ValueError(f"zone min_healthy must be within (0, 1], got {self.min_healthy}")


def locality_from_env(
    env: Mapping[str, str], number: Any, error: type[Exception]
) -> LocalityPolicy | None:
    """``MESH_ZONE``, ``MESH_ZONE_KEY``, ``MESH_ZONE_MIN_HEALTHY`` from a mapping handed in."""
    zone = env.get("MESH_ZONE", "").strip()
    if not zone:
        return None
    kw: dict[str, Any] = {"zone": zone}
    if env.get("MESH_ZONE_KEY", "").strip():
        kw["key"] = env["MESH_ZONE_KEY"].strip()
    if "MESH_ZONE_MIN_HEALTHY" in env:
        kw["min_healthy"] = number("MESH_ZONE_MIN_HEALTHY", env["MESH_ZONE_MIN_HEALTHY"])
    try:
        return LocalityPolicy(**kw)
    except ValueError as exc:
        raise error(f"MESH_ZONE_*: {exc}; MESH_ZONE_MIN_HEALTHY takes e.g. 0.5") from None


def _zone(endpoint: Endpoint, key: str) -> str:
    """The endpoint's zone: its service metadata's ``key``, else its node's."""
    return endpoint.meta.get(key) or endpoint.node_meta.get(key) or ""


class _Split:
    __slots__ = ("all", "local", "picks_local", "picks_spilled", "spilling")

    def __init__(self, all_eps: EndpointSet, local: EndpointSet | None) -> None:
        self.all = all_eps
        self.local = local
        self.picks_local = 0
        self.picks_spilled = 0
        self.spilling = False


class Zones:
    """Per target: the local part of its endpoint set (rebuilt when the set changes) and the
    counts of picks kept local and spilled over."""

    def __init__(self, policy: LocalityPolicy) -> None:
        self.policy = policy
        self._splits: dict[Target, _Split] = {}

    def _split(self, state: ServiceState) -> _Split:
        split = self._splits.get(state.target)
        if split is not None and split.all is state.eps:
            return split
        key, zone = self.policy.key, self.policy.zone
        mine = [st for st in state.eps.states if _zone(st.endpoint, key) == zone]
        local = EndpointSet(mine) if mine and len(mine) < len(state.eps.states) else None
        fresh = _Split(state.eps, local)
        if split is not None:  # keep the counters across endpoint changes
            fresh.picks_local, fresh.picks_spilled = split.picks_local, split.picks_spilled
        self._splits[state.target] = fresh
        return fresh

    def choose(self, state: ServiceState, now: float) -> EndpointSet:
        """The endpoints this pick is made among."""
        split = self._split(state)
        local = split.local
        if local is None:
            return state.eps
        healthy = 0
        for st in local.states:
            if st.available(now) and not st.metric.is_overloaded(now):
                healthy += 1
        if healthy and healthy >= self.policy.min_healthy * len(local.states):
            split.picks_local += 1
            split.spilling = False
            return local
        split.picks_spilled += 1
        split.spilling = True
        return split.all

    def describe(self, state: ServiceState) -> dict[str, Any]:
        """The zone split of one service, for ``mesh_state()``."""
        split = self._split(state)
        zones: dict[str, int] = {}
        for st in state.eps.states:
            z = _zone(st.endpoint, self.policy.key)
            zones[z or "(none)"] = zones.get(z or "(none)", 0) + 1
        return {
            "local_zone": self.policy.zone,
            "endpoints_per_zone": zones,
            "picks_local": split.picks_local,
            "picks_spilled": split.picks_spilled,
            "spilling": split.spilling,
        }
