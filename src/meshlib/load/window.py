"""A service's recent latencies and their quantile, for the delay before a hedged attempt.

Finagle's ``BackupRequestFilter`` sends its backup once the original has outlived a quantile of
the latencies it saw recently. The quantile has to follow the service as it changes, cost next
to nothing per call and never grow, so the window is a ring of the last ``size`` samples and the
quantile is recomputed from it (one sort of at most ``size`` floats) only every ``every``
samples; between recomputations the sorted copy is kept, so any quantile (a call may ask for
its own) is one index away. Not locked: a sample written while
the quantile is being recomputed changes one slot of the ring, which a quantile tolerates.
"""

from __future__ import annotations

import math

__all__ = ["LatencyWindow"]


class LatencyWindow:
    """The last ``size`` latencies (seconds) and cached quantiles over them; ``quantile`` is
    the one asked for by default."""

    __slots__ = ("_dirty", "_every", "_next", "_ring", "_size", "_sorted", "count", "quantile")

    def __init__(self, quantile: float, *, size: int = 1000, every: int = 32) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be within (0, 1), got {quantile}")
        if size < 1 or every < 1:
            raise ValueError(f"size and every must be >= 1, got {size} and {every}")
        self.quantile = quantile
        self._ring: list[float] = []
        self._next = 0
        self._every = every
        self._dirty = 0
        self._sorted: list[float] | None = None
        self.count = 0
        """Samples recorded since the start (not only those still in the window)."""
        self._size = size

    def record(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        ring = self._ring
        if len(ring) < self._size:
            ring.append(seconds)
        else:
            ring[self._next] = seconds
            self._next = (self._next + 1) % self._size
        self.count += 1
        self._dirty += 1
        if self._dirty >= self._every:
            self._sorted = None

    def value(self, min_samples: int = 1, quantile: float | None = None) -> float | None:
        """``quantile`` (default: the window's own) of the recent latencies, by nearest rank;
        None with fewer than ``min_samples`` samples."""
        ring = self._ring
        if len(ring) < min_samples or not ring:
            return None
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = sorted(ring)
            self._dirty = 0
        q = self.quantile if quantile is None else quantile
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
