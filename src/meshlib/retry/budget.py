"""The retry budget: retries may add at most a fixed share of load, plus a small floor.

Finagle's ``RetryBudget`` (defaults ttl 10 s, minRetriesPerSec 10, percentCanRetry 0.2): over a
sliding window of ``ttl`` seconds the number of retries may not exceed ``percent`` of the calls
plus ``min_per_sec * ttl``. Under persistent failure upstream load is therefore capped at about
``1.2 x calls + 10/s`` instead of ``max_attempts x calls``, which is what turns an outage into
a retry storm. Retries are withdrawn when they are *decided*, before any backoff sleep, so
retries waiting in backoff already count (Envoy #30205 counted them only when sent).
Requeues (failures before the request was sent) draw from the same budget.

The window is a ring of ``ttl / 100`` slices plus one, so deposits and withdrawals are O(1), the
budget needs no timer, and the window always spans between ``ttl`` and ``1.01 x ttl``. Finagle's
``WindowedAdder`` keeps ten slices and no spare, so its window can be a tenth short: a storm that
started cold got its initial reserve back before ``ttl`` had passed (measured with one-second
slices: 3.6% over the 1.2 x calls + 10/s bound in a 10 s storm). A spare one-second slice fixed
that but made the window up to a second long, which cut the floor to 5/s at ``ttl=1``; with fine
slices both errors stay within 1%. The clock is injected.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from meshlib.clock import SYSTEM_CLOCK, Clock

__all__ = ["BudgetPolicy", "RetryBudget"]

_SLICES = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetPolicy:
    """Finagle's defaults: 20% of calls plus 10 retries per second, over 10 seconds."""

    ttl: float = 10.0
    min_per_sec: float = 10.0
    percent: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ttl) and 1.0 <= self.ttl <= 600.0):
            raise ValueError(f"retry budget ttl must be within [1, 600] seconds, got {self.ttl}")
        if not (math.isfinite(self.min_per_sec) and self.min_per_sec >= 0):
            raise ValueError(f"retry budget min_per_sec must be >= 0, got {self.min_per_sec}")
        if not (math.isfinite(self.percent) and 0.0 <= self.percent <= 1.0):
            raise ValueError(
                f"retry budget percent must be within [0, 100], got {self.percent * 100:g}"
            )


class RetryBudget:
    """A sliding-window budget of retries; thread-safe, O(1) per operation."""

    def __init__(self, policy: BudgetPolicy | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.policy = policy or BudgetPolicy()
        self._clock = clock
        self._width = self.policy.ttl / _SLICES
        self._n = _SLICES + 1
        self._calls = [0] * self._n
        self._retries = [0] * self._n
        self._sum_calls = 0
        self._sum_retries = 0
        self._slot = self._slot_of(clock.now())
        self._lock = threading.Lock()
        self.exhausted = 0
        """How many retries or requeues the budget refused (a counter, for state and metrics)."""

    def _slot_of(self, now: float) -> int:
        return math.floor(now / self._width)

    def _advance(self, now: float) -> None:
        slot = self._slot_of(now)
        gap = slot - self._slot
        if gap <= 0:
            return
        for step in range(1, min(gap, self._n) + 1):
            i = (self._slot + step) % self._n
            self._sum_calls -= self._calls[i]
            self._sum_retries -= self._retries[i]
            self._calls[i] = 0
            self._retries[i] = 0
        self._slot = slot

    def deposit(self) -> None:
        """One call was made (every call, first attempts only)."""
        with self._lock:
            self._advance(self._clock.now())
            self._calls[self._slot % self._n] += 1
            self._sum_calls += 1

    def balance(self) -> float:
        """Retries still allowed in the current window."""
        with self._lock:
            self._advance(self._clock.now())
            return self._balance()

    def _balance(self) -> float:
        p = self.policy
        return p.min_per_sec * p.ttl + p.percent * self._sum_calls - self._sum_retries

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False (and ``exhausted`` counted) if none is left."""
        with self._lock:
            self._advance(self._clock.now())
            if self._balance() < 1.0:
                self.exhausted += 1
                return False
            self._retries[self._slot % self._n] += 1
            self._sum_retries += 1
            return True

    def refund(self) -> None:
        """Give back one withdrawal that was not used after all (a hedge another budget
        refused), so a refusal elsewhere costs this budget nothing."""
        with self._lock:
            self._advance(self._clock.now())
            slot = self._slot % self._n
            if self._retries[slot] > 0:
                self._retries[slot] -= 1
                self._sum_retries -= 1

    def snapshot(self) -> dict[str, float]:
        """JSON-ready state for ``mesh_state()``."""
        with self._lock:
            self._advance(self._clock.now())
            return {
                "balance": round(self._balance(), 3),
                "calls_in_window": self._sum_calls,
                "retries_in_window": self._sum_retries,
                "exhausted": self.exhausted,
            }
