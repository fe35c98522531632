"""Helpers for testing services that use meshlib: fault injection, a manual clock, upstreams.

Nothing in meshlib imports this package; it is for users' tests and meshlib's own:

* ``FakeConsul``: a faithful Consul HTTP API server on 127.0.0.1 (also
  ``python -m meshlib.testing.fake_consul`` and the ``fake_consul`` pytest fixture);
* ``ManualClock``: inject with ``clock=`` so backoff, EWMA decay and breaker timers run
  without real sleeps;
* ``FaultProxy`` and its toxics: a toxiproxy-style TCP proxy on 127.0.0.1 (latency, bandwidth,
  hangs, resets, truncation, refused connections);
* ``Upstream`` / ``UpstreamThread`` / ``spawn_upstream``: small real HTTP upstreams that
  misbehave on request.
"""

from meshlib.clock import ManualClock
from meshlib.testing.fake_consul import FakeConsul
from meshlib.testing.faultproxy.proxy import (
    FaultProxy,
    ProxyStats,
    bandwidth,
    latency,
    limit_data,
    reset_after_bytes,
    reset_peer,
    slow_close,
    timeout,
)
from meshlib.upstream import (
    SpawnedUpstream,
    Upstream,
    UpstreamBehaviour,
    UpstreamThread,
    spawn_upstream,
)

__all__ = [
    "FakeConsul",
    "FaultProxy",
    "ManualClock",
    "ProxyStats",
    "SpawnedUpstream",
    "Upstream",
    "UpstreamBehaviour",
    "UpstreamThread",
    "bandwidth",
    "latency",
    "limit_data",
    "reset_after_bytes",
    "reset_peer",
    "slow_close",
    "spawn_upstream",
    "timeout",
]
