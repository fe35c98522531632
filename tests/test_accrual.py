"""Failure accrual: when an endpoint dies, how long it stays dead, and the single probe."""

import asyncio
import random
from datetime import timedelta

import pytest

from meshlib import AccrualPolicy
from meshlib.accrual import EndpointHealth, HealthGroup


def _group(n: int = 3, **kw: float) -> tuple[HealthGroup, list[EndpointHealth]]:
    group = HealthGroup(AccrualPolicy(**kw), random.Random(1))  # type: ignore[arg-type]
    return group, [EndpointHealth(group, f"127.0.0.1:{8000 + i}") for i in range(n)]


def test_five_consecutive_failures_kill() -> None:
    _, (h, *_) = _group()
    for i in range(4):
        h.record(float(i), failure=True)
    assert h.state == "alive"
    h.record(4.0, failure=True)
    assert h.state == "dead"
    assert not h.available(4.0)


def test_a_success_resets_the_consecutive_count() -> None:
    _, (h, *_) = _group(success_rate=0.0)
    for i in range(20):
        h.record(float(i) / 10, failure=(i % 4 != 0))
    assert h.state == "alive"


def test_low_success_rate_over_the_window_kills() -> None:
    _, (h, *_) = _group(consecutive_failures=100)
    outcomes = [False, True, False, True, True]  # 2 of 5 succeeded: 40% < 80%
    for i, failure in enumerate(outcomes[:-1]):
        h.record(float(i), failure=failure)
    assert h.state == "alive"
    h.record(4.0, failure=True)
    assert h.state == "dead"


def test_outcomes_of_requests_started_before_death_do_not_revive() -> None:
    _, (h, *_) = _group(consecutive_failures=1)
    h.record(0.0, failure=True)
    h.record(0.1, failure=False)  # an older in-flight request finishing late
    assert h.state == "dead"


def test_success_rate_needs_min_requests() -> None:
    _, (h, *_) = _group(consecutive_failures=100, min_requests=10)
    for i in range(6):
        h.record(float(i), failure=i % 2 == 0)
    assert h.state == "alive"


def test_backoff_grows_with_equal_jitter_and_is_capped() -> None:
    _, (h, *_) = _group(backoff_min=5, backoff_max=300, consecutive_failures=1)
    now = 0.0
    waits = []
    for _ in range(8):
        h.record(now, failure=True, probe=h.state == "probing")
        waits.append(h.dead_until - now)
        now = h.dead_until
        assert h.admit(now)
    for i, wait in enumerate(waits):
        full = min(300.0, 5.0 * 2**i)
        assert full / 2 <= wait <= full


def test_exactly_one_probe_is_admitted() -> None:
    _, (h, *_) = _group(consecutive_failures=1)
    h.record(0.0, failure=True)
    assert not h.admit(h.dead_until - 0.001)
    t = h.dead_until
    assert [h.admit(t) for _ in range(10)] == [True] + [False] * 9
    assert h.state == "probing"
    h.record(t, failure=False, probe=True)
    assert h.state == "alive"
    assert all(h.admit(t) for _ in range(10))


def test_failed_probe_kills_again_for_longer() -> None:
    _, (h, *_) = _group(consecutive_failures=1, backoff_min=5)
    h.record(0.0, failure=True)
    t = h.dead_until
    assert h.admit(t)
    h.record(t, failure=True, probe=True)
    assert h.state == "dead"
    assert h.dead_until - t >= 5.0  # second backoff: 10 s with equal jitter


def test_cancelled_probe_frees_the_slot_without_charging() -> None:
    _, (h, *_) = _group(consecutive_failures=1)
    h.record(0.0, failure=True)
    t = h.dead_until
    assert h.admit(t)
    h.release()
    assert h.state == "dead"
    assert h.admit(t)


def test_ejection_cap_keeps_one_ejectable() -> None:
    _, hs = _group(3, consecutive_failures=1, max_ejection_percent=10)
    for h in hs:
        h.record(0.0, failure=True)
    assert [h.state for h in hs] == ["dead", "alive", "alive"]


def test_ejection_cap_percent() -> None:
    _, hs = _group(4, consecutive_failures=1, max_ejection_percent=50)
    for h in hs:
        h.record(0.0, failure=True)
    assert sum(h.state == "dead" for h in hs) == 2


def test_disabled_accrual_never_kills() -> None:
    _, (h, *_) = _group(consecutive_failures=1, enabled=False)
    for i in range(20):
        h.record(float(i), failure=True)
    assert h.state == "alive"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"success_rate": 1.5}, "success_rate"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"backoff_min": 10, "backoff_max": 5}, "backoff"),
        ({"max_ejection_percent": 120}, "max_ejection_percent"),
    ],
)
def test_policy_validation(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccrualPolicy(**kw)  # type: ignore[arg-type]


async def test_why_not_aiobreaker_half_open_admits_every_concurrent_caller() -> None:
    """The measurement behind replacing aiobreaker (see docs/failure-accrual.md)."""
    aiobreaker = pytest.importorskip("aiobreaker")
    breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(milliseconds=20))
    entered = 0
    gate = asyncio.Event()

    async def failing() -> None:
        raise RuntimeError("down")

    async def probe() -> None:
        nonlocal entered
        entered += 1
        await gate.wait()

    with pytest.raises((RuntimeError, aiobreaker.CircuitBreakerError)):
        await breaker.call_async(failing)
    await asyncio.sleep(0.03)  # aiobreaker reads the wall clock: nothing to inject
    tasks = [asyncio.ensure_future(breaker.call_async(probe)) for _ in range(10)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert entered == 10  # aiobreaker 1.2.0: all ten went through "half-open"
