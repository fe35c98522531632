"""Per-endpoint failure accrual: mark an endpoint dead, back off, revive it with ONE probe.

Finagle's ``FailureAccrualFactory`` with its default policy: an endpoint is marked dead after 5
consecutive failures, or when its success rate over 30 s falls below 80% (with at least 5
requests). It stays dead for a backoff that grows 5 s, 10 s, 20 s ... up to 300 s, with equal
jitter (half fixed, half random). When the backoff has passed, exactly **one** probe request is
let through; its outcome decides between revival and a longer backoff. Linkerd 2 uses the same
shape (7 consecutive, 1 s to 60 s).

Why not aiobreaker, which the design first named: as released (1.2.0) its half-open state lets
*every* concurrent caller through (a test in tests/test_accrual.py shows 10 of 10), it reads the
wall clock (``datetime.now``/``utcnow``), it has no success-rate policy and no growing backoff,
and its ``call(func)`` model cannot record outcomes that are only known when a response *stream*
closes. An adapter would have had to re-implement all of that around its internals, so meshlib
implements the state machine here (about 200 lines, clock and randomness injected).

Health is readable state: the balancer asks ``admit(now)`` before it spends an attempt, which
also claims the single probe slot atomically, and the group keeps the count of endpoints that
are not alive, so panic mode (more than half unavailable: balance over all of them) costs one
comparison per pick. ``max_ejection_percent`` can cap how many endpoints of a service may be
dead at once (Envoy's outlier-detection knob), but one may always be (envoy #26877: small
clusters must still eject their one bad host). Its default is 100, as in Finagle, which has no
cap: the protection for the survivors is panic mode, and a cap of 50% would keep panic mode
from ever starting.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AccrualPolicy", "EndpointHealth", "HealthGroup"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AccrualPolicy:
    """When an endpoint is marked dead and for how long (Finagle's defaults)."""

    consecutive_failures: int = 5
    success_rate: float = 0.8
    window: float = 30.0
    min_requests: int = 5
    backoff_min: float = 5.0
    backoff_max: float = 300.0
    max_ejection_percent: float = 100.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise ValueError(f"consecutive_failures must be >= 1, got {self.consecutive_failures}")
        if not 0.0 <= self.success_rate <= 1.0:
            raise ValueError(f"success_rate must be within [0, 1], got {self.success_rate}")
        if not (math.isfinite(self.window) and self.window >= 1.0):
            raise ValueError(f"accrual window must be >= 1 second, got {self.window}")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ValueError(
                f"accrual backoff must satisfy 0 < min <= max, got {self.backoff_min}, "
                f"{self.backoff_max}"
            )
        if not 0.0 <= self.max_ejection_percent <= 100.0:
            raise ValueError(
                f"max_ejection_percent must be within [0, 100], got {self.max_ejection_percent}"
            )


class HealthGroup:
    """The endpoints of one service, so ejections can be capped and panic detected."""

    def __init__(self, policy: AccrualPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self._members: list[EndpointHealth] = []
        self.dead = 0
        """Members not alive (dead or probing), kept current by their transitions."""
        self.on_change: Callable[[EndpointHealth, str, str], None] | None = None
        self.lock = threading.Lock()

    @property
    def members(self) -> list[EndpointHealth]:
        return self._members

    @members.setter
    def members(self, members: list[EndpointHealth]) -> None:
        """A discovery update: the set changed, so count again (O(n), once per update)."""
        with self.lock:
            self._members = members
            self.dead = sum(1 for m in members if m.state != "alive")

    def dead_count(self) -> int:
        return self.dead

    def panic(self) -> bool:
        """More than half of the endpoints unavailable: balance over all of them."""
        return self.dead * 2 > len(self._members)

    def may_eject(self) -> bool:
        n = len(self.members)
        cap = max(1, math.floor(n * self.policy.max_ejection_percent / 100.0))
        return self.dead_count() < cap


class EndpointHealth:
    """One endpoint's accrual state machine: alive → dead → probing → alive | dead."""

    __slots__ = (
        "_buckets",
        "_consecutive",
        "_deaths",
        "_group",
        "_second",
        "address",
        "dead_until",
        "probing",
        "state",
    )

    def __init__(self, group: HealthGroup, address: str = "") -> None:
        self._group = group
        self.address = address
        self.state = "alive"
        self.dead_until = 0.0
        self.probing = False
        self._consecutive = 0
        self._deaths = 0
        # Per-second (successes, failures) pairs, flat, allocated on first use: a service with
        # thousands of endpoints it never calls should not pay for their windows.
        self._buckets: list[int] = []
        self._second = 0
        group.members.append(self)  # alive: the dead count is unchanged

    # -- what the balancer reads -------------------------------------------------------------

    def available(self, now: float) -> bool:
        """Alive, or dead with the backoff over and no probe in flight. No side effects."""
        if self.state == "alive":
            return True
        return not self.probing and now >= self.dead_until

    def admit(self, now: float) -> bool:
        """Like ``available`` but claims the single probe slot when the endpoint is dead."""
        if self.state == "alive":
            return True
        with self._group.lock:
            if self.probing or now < self.dead_until:
                return False
            self.probing = True
            self._transition("probing")
            return True

    @property
    def consecutive_failures(self) -> int:
        """Failed attempts in a row (reset by a success or an ejection)."""
        return self._consecutive

    def next_probe_in(self, now: float) -> float:
        return max(0.0, self.dead_until - now) if self.state == "dead" else 0.0

    # -- what attempts report ----------------------------------------------------------------

    def record(self, now: float, *, failure: bool, probe: bool = False) -> None:
        """One classified outcome of an attempt on this endpoint.

        While the endpoint is dead only its probe decides; outcomes of requests that started
        before the death (or panic-mode attempts) are counted but change nothing.
        """
        with self._group.lock:
            self._count(now, failure)
            if self.state != "alive":
                if probe and self.state == "probing":
                    if failure:
                        self._kill(now)
                    else:
                        self._revive()
                return
            if not failure:
                self._consecutive = 0
                return
            self._consecutive += 1
            policy = self._group.policy
            if not policy.enabled:
                return
            if (
                self._consecutive >= policy.consecutive_failures or self._rate_too_low(policy)
            ) and self._group.may_eject():
                self._kill(now)

    def release(self) -> None:
        """The probe was cancelled by the caller: free the slot, change nothing else."""
        with self._group.lock:
            if self.probing:
                self.probing = False
                self._transition("dead")

    # -- internals ---------------------------------------------------------------------------

    def _count(self, now: float, failure: bool) -> None:
        second = int(now)
        b = self._buckets
        if not b:
            b.extend([0] * (2 * math.ceil(self._group.policy.window)))
        n = len(b) // 2
        if second != self._second:
            for step in range(1, min(second - self._second, n) + 1):
                i = 2 * ((self._second + step) % n)
                b[i] = b[i + 1] = 0
            self._second = max(second, self._second)
        b[2 * (second % n) + (1 if failure else 0)] += 1

    def success_rate(self) -> tuple[float, int]:
        ok = sum(self._buckets[0::2])
        bad = sum(self._buckets[1::2])
        total = ok + bad
        return (ok / total if total else 1.0), total

    def _rate_too_low(self, policy: AccrualPolicy) -> bool:
        rate, total = self.success_rate()
        return total >= policy.min_requests and rate < policy.success_rate

    def _kill(self, now: float) -> None:
        policy = self._group.policy
        full = min(policy.backoff_max, policy.backoff_min * (2.0**self._deaths))
        self._deaths += 1
        # Equal jitter: half the backoff is fixed, half random, so revivals do not align.
        self.dead_until = now + full / 2.0 + self._group.rng.uniform(0.0, full / 2.0)
        self.probing = False
        self._consecutive = 0
        self._transition("dead")

    def _revive(self) -> None:
        self._deaths = 0
        self._consecutive = 0
        self.probing = False
        self._buckets.clear()
        self._transition("alive")

    def _transition(self, new: str) -> None:
        old, self.state = self.state, new
        if old == new:
            return
        group = self._group
        if old == "alive":
            group.dead += 1
        elif new == "alive":
            group.dead -= 1
        if group.on_change is not None:
            group.on_change(self, old, new)
