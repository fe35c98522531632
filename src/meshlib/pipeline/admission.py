"""Admission: the per-service rate and concurrency limits a call passes before its first attempt.

The decisions (how long to wait, whether to fail fast, which error) are made here once for both
drivers; the drivers only sleep or await the concurrency slot. A call waits only within its
deadline, and only when the limit's policy or the call's ``limit_wait`` says so. The adaptive
concurrency limit never waits: a call above it is refused at once, before any other limit is
consulted, and a call that another limit then refuses gives its adaptive slot back unmeasured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from meshlib.clock import Clock
from meshlib.discovery.base import Target
from meshlib.errors import RateLimited
from meshlib.limit.adaptive import AdaptiveLimit, Permit
from meshlib.limit.limits import ConcurrencyLimit, LimitPolicy, RateLimit
from meshlib.once import build_once
from meshlib.pipeline.call import Call

__all__ = ["Admission", "Ticket"]


class _Limits:
    """One service's rate and concurrency limits."""

    __slots__ = ("adaptive", "concurrency", "policy", "rate")

    def __init__(self, policy: LimitPolicy, clock: Clock) -> None:
        self.policy = policy
        self.rate = RateLimit(policy.rate, policy.burst, clock) if policy.rate else None
        self.concurrency = (
            ConcurrencyLimit(policy.max_in_flight, policy.max_waiters)
            if policy.max_in_flight
            else None
        )
        self.adaptive = AdaptiveLimit(policy.adaptive, clock) if policy.adaptive else None


class Ticket:
    """What a driver must still do to admit a call: sleep ``wait``, then take ``slot`` (if any)
    within ``slot_wait`` seconds. ``permit`` is the adaptive limit's, already taken."""

    __slots__ = ("permit", "slot", "slot_wait", "wait")

    def __init__(
        self,
        wait: float,
        slot: ConcurrencyLimit | None,
        slot_wait: float,
        permit: Permit | None = None,
    ) -> None:
        self.wait = wait
        self.slot = slot
        self.slot_wait = slot_wait
        self.permit = permit

    def abandon(self) -> None:
        """The call was refused or cancelled before it ran: give the adaptive slot back."""
        if self.permit is not None:
            self.permit.abandon()

    def release(self, slot_taken: bool) -> Callable[[], None] | None:
        """What ends the admitted call: releases the concurrency slot and the permit."""
        slot = self.slot if slot_taken else None
        permit = self.permit
        if permit is None:
            return None if slot is None else slot.release
        if slot is None:
            return permit.release

        def both() -> None:
            try:
                slot.release()
            finally:
                permit.release()

        return both


class Admission:
    """The limits of every service a pipeline calls, built on first use."""

    def __init__(self, policies: Mapping[str, LimitPolicy], clock: Clock) -> None:
        self._policies = dict(policies)
        self._clock = clock
        self._lock = threading.Lock()
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
        permit = None
        if lim.adaptive is not None:
            permit = lim.adaptive.try_acquire()
            if permit is None:
                raise RateLimited(
                    f"adaptive concurrency limit of {lim.adaptive.limit} in-flight requests to "
                    f"mesh service {str(call.service.target)!r} reached",
                    request=call.request,
                )
        budget = self._wait_budget(lim, call)
        wait = 0.0
        if lim.rate is not None:
            reserved = lim.rate.reserve(budget)
            if reserved is None:
                if permit is not None:
                    permit.abandon()
                raise RateLimited(
                    f"rate limit of {lim.rate.rate:g}/s for mesh service "
                    f"{str(call.service.target)!r} reached",
                    request=call.request,
                )
            wait = reserved
        return Ticket(wait, lim.concurrency, max(0.0, budget - wait), permit)

    @staticmethod
    def refused(call: Call, limit: ConcurrencyLimit) -> RateLimited:
        """The error for a call that did not get a concurrency slot in time."""
        return RateLimited(
            f"concurrency limit of {limit.limit} in-flight requests to mesh service "
            f"{str(call.service.target)!r} reached",
            request=call.request,
        )

    def _build(self, target: Target) -> _Limits | None:
        """The service's limits, made once however many threads call it first at once."""
        policy = self._policies.get(target.service)

        def build() -> _Limits | None:
            return _Limits(policy, self._clock) if policy is not None else None

        return build_once(self.limits, target, self._lock, build)

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
