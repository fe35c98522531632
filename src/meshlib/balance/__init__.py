"""Choosing one endpoint per attempt: P2C over a load metric (the default) or round robin.

Imports L0 modules and ``load``: L2, I/O-free.
"""

from meshlib.balance.balancer import (
    BALANCERS,
    MAX_EFFORT,
    P2C,
    Balancer,
    EndpointSet,
    EndpointState,
    Health,
    RoundRobin,
    make_balancer,
)

__all__ = [
    "BALANCERS",
    "MAX_EFFORT",
    "P2C",
    "Balancer",
    "EndpointSet",
    "EndpointState",
    "Health",
    "RoundRobin",
    "make_balancer",
]
