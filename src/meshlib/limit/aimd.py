"""An adaptive concurrency limit by AIMD on measured latency, for the inbound side.

Additive increase, multiplicative decrease, as TCP Reno moves its window and as Netflix
concurrency-limits' ``AIMDLimit`` moves a limit: each request that finished within
``latency_target`` while the limit was in use raises the limit by ``1 / limit`` (so about one per
limit's worth of requests, TCP's one segment per round trip); a request slower than the target,
or one the application failed, multiplies it by ``backoff`` (0.9), at most once per
``latency_target`` of time so that one burst of slow requests counts as one congestion signal,
not as hundreds. The limit stays within ``[minimum, maximum]`` and starts at ``maximum``.

Why AIMD and not Gradient2 (or Vegas) here: a server's operator knows its latency objective, and
AIMD against that explicit target is predictable and has one knob. Gradient2 and Vegas infer the
no-load latency from a long-window estimate of the round trip, which on a server under
sustained load drifts upwards with the queue it is meant to detect, and Envoy's gradient filter
re-measures it by periodically cutting concurrency to a minimum, which a busy service feels.
Gradient2 suits the client side better (it sees many servers and no objective of theirs).

I/O-free, on the injected clock, safe from threads. Imports L0 only.
"""

from __future__ import annotations

import math
import threading

from meshlib.clock import Clock

__all__ = ["AimdLimit"]


class AimdLimit:
    """A concurrency limit that follows measured latency; ``limit`` is the current value."""

    def __init__(
        self,
        *,
        minimum: int,
        maximum: int,
        latency_target: float,
        clock: Clock,
        backoff: float = 0.9,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum} and {maximum}")
        if not (math.isfinite(latency_target) and latency_target > 0):
            raise ValueError(f"latency_target must be positive seconds, got {latency_target}")
        if not 0 < backoff < 1:
            raise ValueError(f"backoff must be within (0, 1), got {backoff}")
        self.minimum = minimum
        self.maximum = maximum
        self.latency_target = latency_target
        self.backoff = backoff
        self._clock = clock
        self._value = float(maximum)
        self._last_decrease = -math.inf
        self._lock = threading.Lock()
        self.decreases = 0

    @property
    def limit(self) -> int:
        return max(self.minimum, int(self._value))

    def sample(self, latency: float, in_flight: int, failed: bool = False) -> int:
        """Feed one finished request (its latency and how many were in flight when it started);
        the new limit."""
        with self._lock:
            if failed or latency > self.latency_target:
                now = self._clock.now()
                if now - self._last_decrease >= self.latency_target:
                    self._value = max(float(self.minimum), self._value * self.backoff)
                    self._last_decrease = now
                    self.decreases += 1
            elif in_flight * 2 >= self._value:
                # Grow only while the limit is being used: a service idling at 3 in flight
                # learns nothing about whether 300 would be fine.
                self._value = min(float(self.maximum), self._value + 1.0 / self._value)
            return max(self.minimum, int(self._value))
