"""Per-service rate limits and concurrency limits (bulkheads), with bounded waiting.

A mesh client is also where a service protects its dependencies from itself: an outbound token
bucket caps the request rate to a service, and an in-flight cap (a bulkhead) caps how many
requests to it may be outstanding at once, so one slow dependency cannot absorb every worker.

When a limit is hit the call either fails fast with ``meshlib.RateLimited`` or waits, and a wait
is always bounded: by the call's deadline, by ``max_wait`` when it has none, and by a cap on the
number of waiters. Nothing queues without bound. The token bucket reserves tokens the way Go's
``rate.Limiter`` does (the balance may go negative; each reservation knows its wait), so rate
waits need no wake-ups.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlib.clock import Clock
from meshlib.limit.adaptive import AdaptivePolicy

if TYPE_CHECKING:  # asyncio is imported where it runs: a sync service never needs it
    import asyncio

__all__ = ["ConcurrencyLimit", "LimitPolicy", "RateLimit"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitPolicy:
    """A service's limits; ``None`` means unlimited."""

    rate: float | None = None
    """Requests per second."""
    burst: float | None = None
    """Token bucket size; defaults to one second of ``rate`` (at least 1)."""
    max_in_flight: int | None = None
    wait: bool = True
    max_wait: float = 1.0
    """Longest wait for a limit when the call has no deadline."""
    max_waiters: int = 1024
    adaptive: AdaptivePolicy | None = None
    """An adaptive concurrency limit (Vegas) that refuses calls above it at once."""

    def __post_init__(self) -> None:
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate limit must be a positive number per second, got {self.rate}")
        if self.burst is not None and not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"rate limit burst must be >= 1, got {self.burst}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if not (math.isfinite(self.max_wait) and self.max_wait >= 0):
            raise ValueError(f"max_wait must be >= 0 seconds, got {self.max_wait}")


class RateLimit:
    """A token bucket with reservations: ``reserve`` says how long the caller must wait."""

    def __init__(self, rate: float, burst: float | None, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock.now()
        self._lock = threading.Lock()
        self.refused = 0

    def take(self) -> float:
        """Take a token if one is there now (0.0); else take nothing and return the seconds
        until one will be. Never waits and never goes into debt: the inbound limit answers
        "no, come back in N seconds" rather than queueing the request."""
        with self._lock:
            now = self._clock.now()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            self.refused += 1
            return (1.0 - self._tokens) / self.rate

    def full(self) -> bool:
        """True when the bucket has refilled to its burst, so forgetting it loses nothing."""
        with self._lock:
            refilled = self._tokens + (self._clock.now() - self._stamp) * self.rate
            return refilled >= self.burst

    def reserve(self, max_wait: float) -> float | None:
        """Take a token; return the wait before using it, or None if it would exceed max_wait."""
        with self._lock:
            now = self._clock.now()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate
            if wait > max_wait:
                self.refused += 1
                return None
            self._tokens -= 1.0
            return wait


class ConcurrencyLimit:
    """An in-flight cap with FIFO waiters, usable from asyncio tasks and from threads."""

    def __init__(self, limit: int, max_waiters: int) -> None:
        self.limit = limit
        self.max_waiters = max_waiters
        self.in_flight = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._async_waiters: deque[asyncio.Future[None]] = deque()
        self._sync_waiting = 0

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_flight < self.limit:
                self.in_flight += 1
                return True
            return False

    def release(self) -> None:
        with self._lock:
            while self._async_waiters:
                fut = self._async_waiters.popleft()
                if not fut.done():
                    # Hand the slot straight to the waiter: in_flight stays the same. Resolved
                    # synchronously on its own loop, so a waiter timing out at the same moment
                    # sees the slot and keeps it instead of leaking it.
                    if _on_loop_of(fut):
                        fut.set_result(None)
                    else:
                        fut.get_loop().call_soon_threadsafe(_wake, fut)
                    return
            self.in_flight -= 1
            if self._sync_waiting:
                self._cond.notify()

    async def acquire(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not a scope
        """Wait up to ``timeout`` for a slot; False if none came or too many are waiting."""
        with self._lock:
            if self.in_flight < self.limit:
                self.in_flight += 1
                return True
            if len(self._async_waiters) + self._sync_waiting >= self.max_waiters or timeout <= 0:
                self.refused += 1
                return False
            import asyncio  # loaded: this runs on an event loop

            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._async_waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            with self._lock:
                if fut.done() and not fut.cancelled():
                    return True  # the slot arrived just as we gave up: keep it
                fut.cancel()
                self.refused += 1
            return False
        except asyncio.CancelledError:
            with self._lock:
                handed = fut.done() and not fut.cancelled()
                fut.cancel()
            if handed:
                self.release()
            raise

    def acquire_sync(self, timeout: float) -> bool:
        """Blocking twin of ``acquire``."""
        with self._cond:
            if self.in_flight < self.limit:
                self.in_flight += 1
                return True
            if len(self._async_waiters) + self._sync_waiting >= self.max_waiters or timeout <= 0:
                self.refused += 1
                return False
            self._sync_waiting += 1
            try:
                got = self._cond.wait_for(lambda: self.in_flight < self.limit, timeout)
            finally:
                self._sync_waiting -= 1
            if not got:
                self.refused += 1
                return False
            self.in_flight += 1
            return True


def _on_loop_of(fut: asyncio.Future[None]) -> bool:
    import asyncio  # loaded: an async waiter exists

    try:
        return asyncio.get_running_loop() is fut.get_loop()
    except RuntimeError:
        return False


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
