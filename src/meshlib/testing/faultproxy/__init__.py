"""A fault-injection TCP proxy in the style of toxiproxy: ``FaultProxy`` and its toxics.

``proxy`` forwards connections and applies toxics, which ``toxics`` defines.
"""

from meshlib.testing.faultproxy.proxy import (
    Bandwidth,
    Direction,
    FaultProxy,
    Latency,
    LimitData,
    ProxyStats,
    ResetAfterBytes,
    ResetPeer,
    SlowClose,
    Timeout,
    Toxic,
    bandwidth,
    latency,
    limit_data,
    reset_after_bytes,
    reset_peer,
    slow_close,
    timeout,
)

__all__ = [
    "Bandwidth",
    "Direction",
    "FaultProxy",
    "Latency",
    "LimitData",
    "ProxyStats",
    "ResetAfterBytes",
    "ResetPeer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "bandwidth",
    "latency",
    "limit_data",
    "reset_after_bytes",
    "reset_peer",
    "slow_close",
    "timeout",
]
