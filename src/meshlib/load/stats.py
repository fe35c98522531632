"""Per-endpoint request counters and recent latency percentiles, for state snapshots.

The admin page and the demo show request rate, success rate and p50/p99 per endpoint. Keeping
every latency sample would cost memory per request, so each endpoint keeps cumulative counters
(rates are differences between two snapshots) and a log-bucketed latency histogram for the
current and the previous window (``window`` seconds each): percentiles cover the last one to
two windows, recording is two integer increments, and memory is fixed.
"""

from __future__ import annotations

import math

__all__ = ["EndpointStats"]

_BUCKETS = 64
_BASE = 1.25
_MIN = 0.0001  # 100 us: the first bucket's upper edge
_EMPTY: list[int] = []  # shared marker for "no histogram yet"; never written to


def _bucket(seconds: float) -> int:
    if seconds <= _MIN:
        return 0
    return min(_BUCKETS - 1, 1 + int(math.log(seconds / _MIN, _BASE)))


def _upper(i: int) -> float:
    return _MIN * (_BASE**i)


class EndpointStats:
    """Counters plus two rotating latency histograms; not locked (GIL-atomic increments)."""

    __slots__ = ("_cur", "_prev", "_window", "_window_end", "failures", "requests")

    def __init__(self, now: float = 0.0, window: float = 10.0) -> None:
        self.requests = 0
        self.failures = 0
        self._window = window
        self._window_end = now + window
        # Histograms are allocated on first use (an endpoint never called costs no memory).
        self._cur: list[int] = _EMPTY
        self._prev: list[int] = _EMPTY

    def _rotate(self, now: float) -> None:
        if now < self._window_end:
            return
        self._prev = _EMPTY if now >= self._window_end + self._window else self._cur
        self._cur = _EMPTY
        self._window_end = now + self._window

    def record(self, now: float, seconds: float, *, failed: bool) -> None:
        """One finished attempt."""
        self._rotate(now)
        self.requests += 1
        if failed:
            self.failures += 1
        if self._cur is _EMPTY:
            self._cur = [0] * _BUCKETS
        self._cur[_bucket(seconds)] += 1

    def percentile(self, now: float, q: float) -> float | None:
        """The ``q``-th percentile (0-100) of recent latencies in seconds (bucket upper edge)."""
        self._rotate(now)
        if self._cur is _EMPTY and self._prev is _EMPTY:
            return None
        cur = self._cur if self._cur is not _EMPTY else [0] * _BUCKETS
        prev = self._prev if self._prev is not _EMPTY else [0] * _BUCKETS
        counts = [a + b for a, b in zip(cur, prev, strict=True)]
        total = sum(counts)
        if total == 0:
            return None
        rank = math.ceil(q / 100.0 * total)
        seen = 0
        for i, c in enumerate(counts):
            seen += c
            if seen >= rank:
                return _upper(i)
        return _upper(_BUCKETS - 1)
