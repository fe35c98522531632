"""Time for meshlib's decisions, injected so that tests never sleep and never flake.

Every component that decays, waits or expires takes a ``Clock`` instead of reading
``time.monotonic`` itself. ``SystemClock`` is the real one; ``ManualClock`` only moves when told
to (or when something sleeps on it), which makes backoff, EWMA decay and breaker timers
deterministic in tests. Only the monotonic clock is ever used for intervals: the wall clock jumps.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source with matching sleeps."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...

    def sleep_sync(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The process's monotonic clock; sleeps are real."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # loaded: this runs on an event loop

        await asyncio.sleep(max(0.0, seconds))

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when advanced; a sleep advances it at once instead of waiting.

    Auto-advancing sleeps let a test drive a whole retry schedule in microseconds while every
    duration meshlib computes is still checked against the time that "passed".
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; negative steps are refused because monotonic time never goes back."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back, got advance({seconds})")
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleep_sync(seconds)
        import asyncio

        await asyncio.sleep(0)

    def sleep_sync(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self.advance(seconds)
