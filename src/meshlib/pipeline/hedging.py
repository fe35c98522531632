"""Hedging decisions, shared by both drivers: whether a call may hedge, when, and whether the
budget allows the backup now.

A call is hedged only when it is idempotent (by method, ``@outbound(idempotent=True)`` or an
``Idempotency-Key``) and its body can be sent twice, when hedging is on for its service (the
configuration) or for the call (``@outbound(hedge=...)``, which wins), and when the service has
a second endpoint to send the backup to. The backup is sent once per call, after a fixed delay
or once the original has outlived a quantile of the service's recent latencies
(``meshlib.load.window``), never sooner than the floor. Each backup must be allowed by the
service's hedge budget (5% of calls by default) *and* by its retry budget, so hedges cannot
push the extra load past what retries may add either. I/O-free; the async driver races the
attempts (``race``), and the sync driver never hedges (docs/hedging.md says why).
"""

from __future__ import annotations

from collections.abc import Mapping

from meshlib.clock import Clock
from meshlib.discovery.base import Target
from meshlib.load.window import LatencyWindow
from meshlib.pipeline.call import Call
from meshlib.retry.budget import BudgetPolicy, RetryBudget
from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy

__all__ = ["HedgeState", "Hedging"]


class HedgeState:
    """One service's recent latencies, hedge budget and counters."""

    __slots__ = ("budget", "lost", "refused", "sent", "window", "won")

    def __init__(self, quantile: float, budget: RetryBudget) -> None:
        self.window = LatencyWindow(quantile)
        self.budget = budget
        self.sent = 0
        self.won = 0
        self.lost = 0
        self.refused = 0

    def snapshot(self) -> dict[str, object]:
        """JSON-ready state for ``mesh_state()``."""
        q = self.window.value()
        return {
            "quantile": self.window.quantile,
            "quantile_ms": None if q is None else round(q * 1000.0, 3),
            "samples": self.window.count,
            "sent": self.sent,
            "won": self.won,
            "lost": self.lost,
            "budget_refused": self.refused,
            "budget": self.budget.snapshot(),
        }


class Hedging:
    """The hedging policies of one pipeline and the state of each hedged service."""

    def __init__(
        self, policies: Mapping[str, HedgePolicy], budget: HedgeBudgetPolicy, clock: Clock
    ) -> None:
        self._policies = dict(policies)
        self._budget = budget
        self._clock = clock
        self.states: dict[Target, HedgeState] = {}

    def policy(self, call: Call) -> HedgePolicy | None:
        """The call's hedge policy, or None when it is not to be hedged."""
        if call.policy is None and not self._policies:
            return None  # the usual call: nothing hedges
        own = call.policy.hedge if call.policy is not None else None
        service = self._policies.get(call.service.target.service)
        if own is False:
            return None
        if own is None or own is True:
            chosen = service if service is not None or own is None else HedgePolicy()
        else:
            assert isinstance(own, HedgePolicy)
            chosen = own
        if chosen is None or not (call.idempotent and call.replayable):
            return None
        return chosen

    def state(self, target: Target, policy: HedgePolicy) -> HedgeState:
        """The service's state, built on its first hedged call; the window's own quantile
        (shown in ``mesh_state()``) is that first policy's, or ``1 - percent``."""
        found = self.states.get(target)
        if found is None:
            quantile = policy.quantile
            if quantile is None:
                quantile = max(0.5, 1.0 - self._budget.percent)
            budget = RetryBudget(
                BudgetPolicy(
                    ttl=self._budget.ttl,
                    min_per_sec=self._budget.min_per_sec,
                    percent=self._budget.percent,
                ),
                clock=self._clock,
            )
            found = self.states[target] = HedgeState(quantile, budget)
        return found

    @staticmethod
    def delay(policy: HedgePolicy, state: HedgeState) -> float | None:
        """Seconds after the original attempt to send the backup; None while the quantile has
        too few samples to be trusted. A policy's own quantile wins over the service's."""
        if policy.delay is not None:
            return policy.delay
        q = state.window.value(policy.min_samples, policy.quantile)
        if q is None:
            return None
        return max(policy.min_delay, q)

    @staticmethod
    def spend(state: HedgeState, retry_budget: RetryBudget) -> bool:
        """Withdraw one backup from the hedge budget and the retry budget, or neither."""
        if not state.budget.try_withdraw():
            state.refused += 1
            return False
        if not retry_budget.try_withdraw():
            state.budget.refund()
            state.refused += 1
            return False
        state.sent += 1
        return True

    @staticmethod
    def refund(state: HedgeState, retry_budget: RetryBudget) -> None:
        """A backup that was paid for could not be sent after all: give both budgets back."""
        state.budget.refund()
        retry_budget.refund()
        state.sent -= 1
