"""The retry budget: Finagle's numbers, a sliding window, and exhaustion counted."""

import pytest

from meshlib import BudgetPolicy, RetryBudget
from meshlib.clock import ManualClock


def test_floor_allows_min_per_sec_times_ttl_without_calls() -> None:
    budget = RetryBudget(BudgetPolicy(ttl=10, min_per_sec=10, percent=0.2), clock=ManualClock())
    assert sum(budget.try_withdraw() for _ in range(150)) == 100
    assert budget.exhausted == 50


def test_percent_of_calls_on_top_of_the_floor() -> None:
    budget = RetryBudget(BudgetPolicy(min_per_sec=0, percent=0.2), clock=ManualClock())
    for _ in range(100):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(100)) == 20


def test_window_slides() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetPolicy(ttl=10, min_per_sec=0, percent=0.5), clock=clock)
    for _ in range(10):
        budget.deposit()
    assert budget.balance() == pytest.approx(5)
    clock.advance(5)
    assert budget.balance() == pytest.approx(5)
    clock.advance(6)
    assert budget.balance() == pytest.approx(0)


def test_withdrawals_expire_too() -> None:
    clock = ManualClock()
    budget = RetryBudget(BudgetPolicy(ttl=2, min_per_sec=1, percent=0), clock=clock)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.advance(3)
    assert budget.try_withdraw()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"percent": 1.2}, r"percent must be within \[0, 100\], got 120"),
        ({"ttl": 0.5}, "ttl"),
        ({"min_per_sec": -1}, "min_per_sec"),
    ],
)
def test_policy_validation(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BudgetPolicy(**kw)


def test_snapshot_is_plain_json() -> None:
    import json

    budget = RetryBudget(clock=ManualClock())
    budget.deposit()
    json.dumps(budget.snapshot())
    assert budget.snapshot()["calls_in_window"] == 1


def test_window_never_shorter_than_ttl() -> None:
    """Withdrawals made late in a second must still count a full ttl later: a cold-started
    storm may not get its initial reserve back before ttl has passed."""
    clock = ManualClock(1000.7)
    budget = RetryBudget(BudgetPolicy(ttl=10, min_per_sec=10, percent=0.2), clock=clock)
    assert sum(budget.try_withdraw() for _ in range(100)) == 100
    clock.advance(9.5)  # 1010.2: a 10-bucket ring would already have dropped second 1000
    assert not budget.try_withdraw()
    clock.advance(1.0)  # 1011.2: more than ttl after every withdrawal
    assert budget.try_withdraw()


@pytest.mark.parametrize("ttl", [1.0, 10.0])
def test_floor_holds_its_rate_over_time(ttl: float) -> None:
    """The floor is min_per_sec retries per second over any long run, for short ttls too: a
    window longer than ttl would hand out fewer."""
    clock = ManualClock(1000.37)
    budget = RetryBudget(BudgetPolicy(ttl=ttl, min_per_sec=10, percent=0.0), clock=clock)
    granted = 0
    for _ in range(10_000):  # 100 s in 10 ms steps, withdrawing all that is allowed
        while budget.try_withdraw():
            granted += 1
        clock.advance(0.01)
    assert 10 * 100 * 0.98 <= granted <= 10 * (100 + ttl) + 1
