"""Rate and concurrency limits: bounded waits, fail fast, never an unbounded queue."""

import asyncio

import pytest

from meshlib import LimitPolicy
from meshlib.clock import ManualClock
from meshlib.limit.limits import ConcurrencyLimit, RateLimit


def test_token_bucket_reserves_and_refuses_beyond_max_wait() -> None:
    clock = ManualClock()
    bucket = RateLimit(rate=10, burst=2, clock=clock)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.0) is None
    assert bucket.reserve(1.0) == pytest.approx(0.1)
    assert bucket.reserve(1.0) == pytest.approx(0.2)
    clock.advance(1.0)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.refused == 1


async def test_concurrency_limit_hands_slots_to_waiters_in_order() -> None:
    limit = ConcurrencyLimit(1, max_waiters=10)
    assert await limit.acquire(0)
    order: list[int] = []

    async def waiter(i: int) -> None:
        assert await limit.acquire(1.0)
        order.append(i)
        limit.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    limit.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert limit.in_flight == 0


async def test_concurrency_limit_times_out_and_bounds_waiters() -> None:
    limit = ConcurrencyLimit(1, max_waiters=1)
    assert limit.try_acquire()
    assert not await limit.acquire(0.0)
    first = asyncio.create_task(limit.acquire(0.05))
    await asyncio.sleep(0)
    assert not await limit.acquire(1.0)  # the one waiter place is taken
    assert not await first
    assert limit.in_flight == 1
    assert limit.refused == 3


def test_sync_concurrency_limit() -> None:
    limit = ConcurrencyLimit(2, max_waiters=4)
    assert limit.acquire_sync(0)
    assert limit.acquire_sync(0)
    assert not limit.acquire_sync(0.01)
    limit.release()
    assert limit.acquire_sync(0)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        LimitPolicy(rate=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        LimitPolicy(max_in_flight=0)
