"""Per-endpoint load metrics: Peak-EWMA latency with outstanding requests, plus a failure score.

Peak-EWMA comes from Finagle (``PeakEwma``, used by ``p2cPeakEwma``) and linkerd2-proxy /
tower-balance: the cost of an endpoint is a time-weighted moving average of its round-trip
times that jumps to any *higher* sample at once (peak sensitivity) and decays towards lower ones
with time constant ``decay`` (10 s); the load is ``cost * (pending + 1)``. A new endpoint starts
at ``default_rtt`` (30 ms, linkerd2's default) rather than zero, so it is not flooded before it
has answered once. The cost also decays towards zero while idle (Finagle observes a zero sample
on every read), so a replica that was slow once is tried again later.

Failures: Finagle and Linkerd score latency only, so a replica that answers 503 in 1 ms looks
*better* than its healthy peers and attracts more than its share (REFERENCE §2 measured 35% for
1 of 3 at 30% errors). meshlib keeps a second moving average, of the failure ratio ``f``, over
the last ~``decay`` seconds or ~``failure_window`` attempts, whichever is shorter, and multiplies
the load by ``1 / (1 - f)^2``: at 5% failures an endpoint costs 1.1x, at 30% about 2x, at 90%
100x. A replica answering 429 is additionally treated as fully loaded until its Retry-After has
passed (Linkerd's load biaser does the same).

``LeastLoaded`` is the simpler metric for ``p2c-least-loaded``: outstanding requests only, with
the same failure multiplier.

These objects are not thread-safe by locking: their updates are a few float assignments, and a
lost update under a race only nudges a heuristic. The GIL keeps each assignment atomic.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_DECAY", "DEFAULT_RTT", "LeastLoaded", "LoadMetric", "PeakEwma"]

DEFAULT_DECAY = 10.0
"""Seconds; Finagle's and linkerd2-proxy's decay time."""
DEFAULT_RTT = 0.030
"""Seconds assumed for an endpoint that has not answered yet (linkerd2-proxy's default)."""
_FAILURE_WINDOW = 20
_MAX_FAILURE = 0.99
_OVERLOAD_LOAD = 1e9


class LoadMetric:
    """Outstanding requests, failure score and overload hold: what every metric shares."""

    __slots__ = ("_fail", "_fail_stamp", "_overloaded_until", "decay", "pending")

    def __init__(self, *, decay: float = DEFAULT_DECAY, now: float = 0.0) -> None:
        self.decay = decay
        self.pending = 0
        self._fail = 0.0
        self._fail_stamp = now
        self._overloaded_until = 0.0

    def start(self) -> None:
        """A request was sent to the endpoint."""
        self.pending += 1

    def finish(self, now: float, rtt: float, *, failed: bool) -> None:
        """The request's response stream closed (or it failed): record what happened."""
        if self.pending > 0:
            self.pending -= 1
        self._observe_failure(now, 1.0 if failed else 0.0)

    def cancel(self) -> None:
        """The caller gave up: the request leaves the count but says nothing about health."""
        if self.pending > 0:
            self.pending -= 1

    def overloaded(self, until: float) -> None:
        """The endpoint asked for less traffic (429): treat it as saturated until ``until``."""
        self._overloaded_until = max(self._overloaded_until, until)

    def is_overloaded(self, now: float) -> bool:
        """True while the endpoint's last request for less traffic holds."""
        return now < self._overloaded_until

    def _observe_failure(self, now: float, sample: float) -> None:
        elapsed = max(0.0, now - self._fail_stamp)
        # Time-weighted, but never slower than a count window: reacts within ~20 attempts at
        # high rates and within ~decay seconds at low rates.
        keep = min(math.exp(-elapsed / self.decay), 1.0 - 1.0 / _FAILURE_WINDOW)
        self._fail = self._fail * keep + sample * (1.0 - keep)
        self._fail_stamp = now

    def failure_rate(self, now: float) -> float:
        """The failure ratio, decayed towards zero by the time since the last attempt."""
        elapsed = max(0.0, now - self._fail_stamp)
        return self._fail * math.exp(-elapsed / self.decay)

    def _multiplier(self, now: float) -> float:
        if self._fail < 1e-6:
            return 1.0
        f = min(self.failure_rate(now), _MAX_FAILURE)
        return 1.0 / ((1.0 - f) * (1.0 - f))

    def load(self, now: float) -> float:
        """The balancer's score: lower is better."""
        if now < self._overloaded_until:
            return _OVERLOAD_LOAD + self.pending
        return (self.pending + 1) * self._multiplier(now)


class LeastLoaded(LoadMetric):
    """Outstanding requests (times the failure multiplier): ``p2c-least-loaded``."""

    __slots__ = ()


class PeakEwma(LoadMetric):
    """Finagle's Peak-EWMA cost times ``pending + 1``, times the failure multiplier."""

    __slots__ = ("_cost", "_stamp")

    def __init__(
        self, *, decay: float = DEFAULT_DECAY, default_rtt: float = DEFAULT_RTT, now: float = 0.0
    ) -> None:
        super().__init__(decay=decay, now=now)
        self._cost = default_rtt
        self._stamp = now

    def cost(self, now: float) -> float:
        """The latency estimate in seconds, first decayed towards zero for the time since the last
        update. Reading decays the stored value, exactly as Finagle's ``get`` observes a zero
        sample, so the estimate behaves as a decaying peak of recent round-trip times."""
        elapsed = now - self._stamp
        if elapsed > 0.0:
            self._cost *= math.exp(-elapsed / self.decay)
            self._stamp = now
        return self._cost

    def observe(self, now: float, rtt: float) -> None:
        """Fold one round-trip time into the estimate: peaks at once, decays smoothly."""
        elapsed = max(0.0, now - self._stamp)
        if rtt > self._cost:
            self._cost = rtt
        else:
            w = math.exp(-elapsed / self.decay)
            self._cost = self._cost * w + rtt * (1.0 - w)
        self._stamp = now

    def finish(self, now: float, rtt: float, *, failed: bool) -> None:
        # A fast failure (connection refused in 100 us) must not make the endpoint look quick:
        # failures only ever raise the latency estimate.
        if not failed or rtt > self.cost(now):
            self.observe(now, rtt)
        super().finish(now, rtt, failed=failed)

    def load(self, now: float) -> float:
        if now < self._overloaded_until:
            return _OVERLOAD_LOAD + self.pending
        return self.cost(now) * (self.pending + 1) * self._multiplier(now)
