"""An adaptive concurrency limit per service: TCP Vegas applied to requests in flight.

A fixed in-flight cap is either too low (it wastes capacity) or too high (a saturated service
queues until every call times out). Netflix's concurrency-limits finds the cap from measured
latency instead, and this is its ``VegasLimit``: with ``rtt_noload`` the fastest round trip
seen lately and ``rtt`` the latest, ``limit * (1 - rtt_noload / rtt)`` estimates how many of
the calls in flight are *queued* at the service rather than being served. The limit grows while
that queue stays under ``alpha`` (3 log10 limit), shrinks once it passes ``beta`` (6 log10
limit), shrinks too whenever a call is dropped (timed out or answered overloaded), and never
grows while fewer than half of its slots are used. Calls above the limit are refused at once:
waiting in a client-side queue is the failure the limit exists to prevent.

Why Vegas and not Gradient2: Gradient2 compares the latest latency with a long-term average of
latency, and under overload that lasts longer than its averaging window the average catches up
with the inflated latency, so the limit drifts up until the queue is as long as the deadline
allows. Vegas compares with the no-load latency, so it holds a bounded queue (a few requests
past what the service serves at once) however long the overload lasts, which is what keeps
calls inside their deadline. Its known weakness, a no-load latency that goes stale when the
service gets slower for good, is handled as in concurrency-limits: every ``probe`` x limit
samples (jittered) the next sample is taken as the new no-load latency.

Thread-safe (one lock, O(1) per call), I/O-free, on the injected clock.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from meshlib.clock import Clock

__all__ = ["AdaptiveLimit", "AdaptivePolicy", "Permit"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptivePolicy:
    """The Vegas limit's bounds and its starting point (concurrency-limits' defaults)."""

    initial: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    smoothing: float = 1.0
    """Weight of each new estimate (1.0: take it as it is, as concurrency-limits does)."""
    probe: int = 30
    """Reset the no-load latency about every ``probe`` x limit samples."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.max_limit:
            raise ValueError(
                f"adaptive limit bounds must satisfy 1 <= min <= max, got "
                f"min={self.min_limit}, max={self.max_limit}"
            )
        if not self.min_limit <= self.initial <= self.max_limit:
            raise ValueError(
                f"adaptive initial limit must be within [{self.min_limit}, {self.max_limit}], "
                f"got {self.initial}"
            )
        if not (math.isfinite(self.smoothing) and 0.0 < self.smoothing <= 1.0):
            raise ValueError(f"adaptive smoothing must be within (0, 1], got {self.smoothing}")
        if self.probe < 1:
            raise ValueError(f"adaptive probe must be >= 1, got {self.probe}")


def _log10(limit: float) -> float:
    return max(1.0, math.log10(max(1.0, limit)))


class Permit:
    """One admitted call: ``release()`` once, when it ends; set ``dropped`` first if it timed
    out or was answered overloaded, or ``ignored`` if its latency says nothing (it failed)."""

    __slots__ = ("_done", "_limit", "_started", "dropped", "ignored", "in_flight")

    def __init__(self, limit: AdaptiveLimit, started: float, in_flight: int) -> None:
        self._limit = limit
        self._started = started
        self._done = False
        self.dropped = False
        self.ignored = False
        self.in_flight = in_flight

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        if self.ignored and not self.dropped:
            self._limit.forget()
        else:
            self._limit.completed(self, self._limit.clock.now() - self._started)

    def abandon(self) -> None:
        """The call never ran (another limit refused it): free the slot, learn nothing."""
        if self._done:
            return
        self._done = True
        self._limit.forget()


class AdaptiveLimit:
    """A Vegas concurrency limit with fast refusal above it."""

    def __init__(
        self, policy: AdaptivePolicy, clock: Clock, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._limit = float(policy.initial)
        self.in_flight = 0
        self.refused = 0
        self.dropped = 0
        self.rtt_noload = 0.0
        self.last_rtt = 0.0
        self._samples = 0
        self._probe_at = self._next_probe()

    @property
    def limit(self) -> int:
        return int(self._limit)

    def _next_probe(self) -> float:
        return (0.5 + self._rng.random()) * self.policy.probe * self._limit

    def try_acquire(self) -> Permit | None:
        """A permit, or None (``refused`` counted) when the limit is reached."""
        with self._lock:
            if self.in_flight >= int(self._limit):
                self.refused += 1
                return None
            self.in_flight += 1
            return Permit(self, self.clock.now(), self.in_flight)

    def forget(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def completed(self, permit: Permit, rtt: float) -> None:
        with self._lock:
            self.in_flight -= 1
            if permit.dropped:
                self.dropped += 1
            self._update(rtt, permit.in_flight, permit.dropped)

    def _update(self, rtt: float, in_flight: int, dropped: bool) -> None:
        """concurrency-limits' ``VegasLimit._update``, sample by sample."""
        p = self.policy
        self.last_rtt = rtt
        self._samples += 1
        if self._samples >= self._probe_at:
            self._samples = 0
            self._probe_at = self._next_probe()
            self.rtt_noload = rtt
            return
        if rtt <= 0:
            return
        if self.rtt_noload == 0.0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return
        limit = self._limit
        log = _log10(limit)
        if dropped:
            new = limit - log
        elif in_flight * 2 < limit:
            return  # app-limited: the limit is not what holds calls back, do not grow it
        else:
            queue = math.ceil(limit * (1.0 - self.rtt_noload / rtt))
            if queue <= log:
                new = limit + 6 * log
            elif queue < 3 * log:
                new = limit + log
            elif queue > 6 * log:
                new = limit - log
            else:
                return
        new = max(float(p.min_limit), min(float(p.max_limit), new))
        self._limit = (1.0 - p.smoothing) * limit + p.smoothing * new

    def snapshot(self) -> dict[str, object]:
        """JSON-ready state for ``mesh_state()``."""
        with self._lock:
            return {
                "algorithm": "vegas",
                "limit": int(self._limit),
                "in_flight": self.in_flight,
                "refused": self.refused,
                "dropped": self.dropped,
                "rtt_noload_ms": round(self.rtt_noload * 1000.0, 3),
                "last_rtt_ms": round(self.last_rtt * 1000.0, 3),
                "min_limit": self.policy.min_limit,
                "max_limit": self.policy.max_limit,
            }
