"""Load metrics for the balancer: Peak-EWMA and least-loaded scores, per-endpoint latency stats.

Owns how loaded an endpoint looks (``metric``), what it recently did (``stats``) and a service's
recent latency quantile, which sets when a hedge is sent (``window``). Imports
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
from meshlib.load.window import (
    LatencyWindow,
)

__all__ = [
    "DEFAULT_DECAY",
    "DEFAULT_RTT",
    "EndpointStats",
    "LatencyWindow",
    "LeastLoaded",
    "LoadMetric",
    "PeakEwma",
]
