"""Admission: the per-service rate and concurrency limits a call passes before its first attempt.

The decisions (how long to wait, whether to fail fast, which error) are made here once for both
drivers; the drivers only sleep or await the concurrency slot. A call waits only within its
deadline, and only when the limit's policy or the call's ``limit_wait`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshlib.clock import Clock
from meshlib.discovery.base import Target
from meshlib.errors import RateLimited
from meshlib.limit.limits import ConcurrencyLimit, LimitPolicy, RateLimit
from meshlib.pipeline.call import Call

__all__ = ["Admission", "Ticket"]


class _Limits:
    """One service's rate and concurrency limits."""

    __slots__ = ("concurrency", "policy", "rate")

    def __init__(self, policy: LimitPolicy, clock: Clock) -> None:
        self.policy = policy
        self.rate = RateLimit(policy.rate, policy.burst, clock) if policy.rate else None
        self.concurrency = (
            ConcurrencyLimit(policy.max_in_flight, policy.max_waiters)
            if policy.max_in_flight
            else None
        )


class Ticket:
    """What a driver must still do to admit a call: sleep ``wait``, then take ``slot`` (if any)
    within ``slot_wait`` seconds."""

    __slots__ = ("slot", "slot_wait", "wait")

    def __init__(self, wait: float, slot: ConcurrencyLimit | None, slot_wait: float) -> None:
        self.wait = wait
        self.slot = slot
        self.slot_wait = slot_wait


class Admission:
    """The limits of every service a pipeline calls, built on first use."""

    def __init__(self, policies: Mapping[str, LimitPolicy], clock: Clock) -> None:
        self._policies = dict(policies)
        self._clock = clock
        self.limits: dict[Target, _Limits | None] = {}

    def enter(self, call: Call) -> Ticket | None:
        """None when the call's service has no limits; else the ticket to admit it.

        A rate limit that cannot be met in time raises ``RateLimited`` here, before any wait."""
        try:
            lim = self.limits[call.service.target]
        except KeyError:
            lim = self._build(call.service.target)
        if lim is None:
            return None
        budget = self._wait_budget(lim, call)
        wait = 0.0
        if lim.rate is not None:
            reserved = lim.rate.reserve(budget)
            if reserved is None:
                raise RateLimited(
                    f"rate limit of {lim.rate.rate:g}/s for mesh service "
                    f"{str(call.service.target)!r} reached",
                    request=call.request,
                )
            wait = reserved
        return Ticket(wait, lim.concurrency, max(0.0, budget - wait))

    @staticmethod
    def refused(call: Call, limit: ConcurrencyLimit) -> RateLimited:
        """The error for a call that did not get a concurrency slot in time."""
        return RateLimited(
            f"concurrency limit of {limit.limit} in-flight requests to mesh service "
            f"{str(call.service.target)!r} reached",
            request=call.request,
        )

    def _build(self, target: Target) -> _Limits | None:
        policy = self._policies.get(target.service)
        lim = _Limits(policy, self._clock) if policy is not None else None
        self.limits[target] = lim
        return lim

    @staticmethod
    def _wait_budget(lim: _Limits, call: Call) -> float:
        """How long this call may wait for a limit: 0 to fail fast, else bounded."""
        wait = lim.policy.wait
        if call.policy is not None and call.policy.limit_wait is not None:
            wait = call.policy.limit_wait
        if not wait:
            return 0.0
        remaining = call.remaining()
        return lim.policy.max_wait if remaining is None else max(0.0, remaining)
