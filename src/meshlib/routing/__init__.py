"""From a URL's host to a service's endpoint set: addressing, the router and its snapshot.

``addressing`` decides which hosts are mesh names, ``router`` joins discovery, the balancer
and failure accrual per service, ``snapshot`` renders what it knows for ``mesh_state()``.
Imports L0, L1 and ``balance``: L2, I/O-free.
"""

from meshlib.routing.addressing import (
    Addressing,
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
    "Router",
    "ServiceState",
    "snapshot",
]
