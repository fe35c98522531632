"""The Connect half of FakeConsul's state: its CA, its intentions and the default decision.

Handlers reach it through ``Context.connect``; the Python API (``connect_api.ConnectAPI``) and
the server share the same object, so a root rotated from a test is what the next HTTP read sees.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .connect_ca import ConnectCA
from .intentions import Intentions
from .state import State

__all__ = ["ConnectState"]


@dataclass(slots=True)
class ConnectState:
    """The CA and intentions of one datacenter; ``default_allow`` follows the ACL default."""

    ca: ConnectCA
    intentions: Intentions
    default_allow: bool = True

    @classmethod
    def create(
        cls,
        state: State,
        *,
        datacenter: str,
        node_name: str,
        enabled: bool,
        leaf_ttl: float,
        default_allow: bool,
    ) -> ConnectState:
        """A CA whose cluster ID (and so trust domain) is stable for a datacenter and node."""
        seed = f"meshlib-fake-consul-cluster:{datacenter}:{node_name}"
        cluster_id = str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
        ca = ConnectCA(
            state,
            datacenter=datacenter,
            cluster_id=cluster_id,
            leaf_ttl=leaf_ttl,
            enabled=enabled,
        )
        return cls(ca, Intentions(state), default_allow)
