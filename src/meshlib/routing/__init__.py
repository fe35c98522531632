"""From a URL's host to a service's endpoint set: addressing, the router and its snapshot.

``addressing`` decides which hosts are mesh names, ``router`` joins discovery, the balancer
and failure accrual per service (``state`` is the endpoint set it hands out), ``chains``
applies a service's discovery chain per request (routes, splits, subsets, failover, the
override), ``locality`` prefers the caller's zone, and ``snapshot`` renders what it knows for
``mesh_state()``. Imports L0, L1 and ``balance``: L2, I/O-free.
"""

from meshlib.routing.addressing import (
    Addressing,
)
from meshlib.routing.locality import (
    LocalityPolicy,
)
from meshlib.routing.router import (
    Router,
    ServiceState,
)
from meshlib.routing.snapshot import (
    snapshot,
)

__all__ = [
    "Addressing",
    "LocalityPolicy",
    "Router",
    "ServiceState",
    "snapshot",
]
