"""Retries: the policy (tenacity's wait vocabulary), the retry budget, and replayable bodies.

The only owner of tenacity. ``policy`` says when and how long to wait, ``budget`` caps retries
at a share of calls (Finagle's RetryBudget), ``replay`` buffers a streamed body so it can be
sent again, ``hedge`` says when a backup attempt may be sent before the first has answered.
Imports L0 modules only: L1.
"""

from typing import TYPE_CHECKING, Any

from meshlib import lazy

_EXPORTS = {
    "BudgetPolicy": "budget",
    "HedgeBudgetPolicy": "hedge",
    "HedgePolicy": "hedge",
    "IDEMPOTENT_METHODS": "policy",
    "RetryBudget": "budget",
    "RetryPolicy": "policy",
    "backoff_delay": "policy",
    "buffer_async": "replay",
    "buffer_sync": "replay",
    "is_unsent": "policy",
    "parse_hedge": "hedge",
    "parse_retry_after": "policy",
}

if TYPE_CHECKING:
    from meshlib.retry.budget import BudgetPolicy, RetryBudget
    from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy, parse_hedge
    from meshlib.retry.policy import (
        IDEMPOTENT_METHODS,
        RetryPolicy,
        backoff_delay,
        is_unsent,
        parse_retry_after,
    )
    from meshlib.retry.replay import buffer_async, buffer_sync

__all__ = [
    "IDEMPOTENT_METHODS",
    "BudgetPolicy",
    "HedgeBudgetPolicy",
    "HedgePolicy",
    "RetryBudget",
    "RetryPolicy",
    "backoff_delay",
    "buffer_async",
    "buffer_sync",
    "is_unsent",
    "parse_hedge",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
