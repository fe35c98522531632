"""Token buckets per caller key, in bounded memory, so one noisy caller cannot spend another's rate.

An inbound rate limit keyed by the caller (its mesh identity or a header) must not grow a bucket
for every key a hostile client invents. The table holds at most ``max_keys`` buckets in
least-recently-used order. A new key takes the place of the least recently used bucket only if
that bucket has refilled to its burst, because a full bucket is exactly what a fresh one would
be, so forgetting it changes no decision. Otherwise the new key shares one overflow bucket with
every other key that found the table full, so a burst of new keys cannot evict callers that are
still using their buckets. Each decision is O(1): only the least recently used entry is ever
looked at.

What this bounds is memory, not a key-inventing client's rate: each distinct key is a distinct
caller with a rate of its own, which is what per-caller limits mean. Keys a client cannot choose
(its verified mTLS identity) or a server-wide in-flight limit are the answer to such a client.

The buckets are ``RateLimit``s (``take``: a token now, or the seconds until one), on the
injected clock. Imports L0 only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from meshlib.clock import Clock
from meshlib.limit.limits import RateLimit

__all__ = ["OVERFLOW_KEY", "KeyedRateLimit"]

OVERFLOW_KEY = "<overflow>"
"""The key of the bucket shared by callers that found the table full."""


class KeyedRateLimit:
    """``rate`` requests per second (``burst`` at once) for each key, at most ``max_keys`` keys."""

    def __init__(self, rate: float, burst: float | None, max_keys: int, clock: Clock) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, RateLimit] = OrderedDict()
        self._overflow = RateLimit(rate, burst, clock)
        self._lock = threading.Lock()
        self.overflowed = 0
        """Decisions made with the overflow bucket because the table was full."""

    def take(self, key: str) -> float:
        """0.0 if ``key`` may go now (a token is taken), else the seconds until it may."""
        return self._bucket(key).take()

    def _bucket(self, key: str) -> RateLimit:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                self._buckets.move_to_end(key)
                return bucket
            if len(self._buckets) >= self.max_keys:
                oldest_key, oldest = next(iter(self._buckets.items()))
                if not oldest.full():
                    self.overflowed += 1
                    return self._overflow
                del self._buckets[oldest_key]
            bucket = self._buckets[key] = RateLimit(self.rate, self.burst, self._clock)
            return bucket

    def __len__(self) -> int:
        return len(self._buckets)
