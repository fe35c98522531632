"""Load metrics for the balancer: Peak-EWMA and least-loaded scores, per-endpoint latency stats.

Owns how loaded an endpoint looks (``metric``) and what it recently did (``stats``). Imports
nothing from meshlib and no third-party package: L1, I/O-free.
"""

from meshlib.load.metric import (
    DEFAULT_DECAY,
    DEFAULT_RTT,
    LeastLoaded,
    LoadMetric,
    PeakEwma,
)
from meshlib.load.stats import (
    EndpointStats,
)

__all__ = [
    "DEFAULT_DECAY",
    "DEFAULT_RTT",
    "EndpointStats",
    "LeastLoaded",
    "LoadMetric",
    "PeakEwma",
]
