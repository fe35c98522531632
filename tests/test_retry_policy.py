"""Retry policy pieces: backoff with injected jitter, Retry-After, and 'was it sent?'."""

import email.utils
import random

import httpx
import pytest
import tenacity

from meshlib import RetryPolicy
from meshlib.retry.policy import backoff_delay, exponential_wait, is_unsent, parse_retry_after
from meshlib.retry.policy import describe_wait as describe


def test_default_backoff_is_envoy_like_full_jitter() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    for n, cap in [(1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (9, 0.25)]:
        draws = [backoff_delay(policy, n, rng) for _ in range(200)]
        assert min(draws) >= 0.0
        assert max(draws) <= cap + 1e-9
        assert max(draws) > cap * 0.8


def test_any_tenacity_wait_works_without_jitter() -> None:
    policy = RetryPolicy(wait=tenacity.wait_fixed(0.3), jitter=False)
    assert backoff_delay(policy, 3, random.Random(0)) == pytest.approx(0.3)


def test_the_default_wait_is_tenacitys_exponential_built_at_first_use() -> None:
    ours = exponential_wait(0.025, 0.25)
    theirs = tenacity.wait_exponential(multiplier=0.025, max=0.25)
    for n in range(1, 10):
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = n
        assert ours(state) == theirs(state)
    assert RetryPolicy() == RetryPolicy()  # two default configurations compare equal
    assert RetryPolicy().wait != exponential_wait(0.05, 0.25)
    assert describe(RetryPolicy().wait) == describe(theirs) == "exponential(0.025s..0.25s)"


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("3") == 3.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(date, wall_now=now) == pytest.approx(7.0)
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), wall_now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-1") is None


def test_unsent_failures() -> None:
    req = httpx.Request("GET", "http://x/")
    assert is_unsent(httpx.ConnectError("refused", request=req))
    assert is_unsent(httpx.ConnectTimeout("slow", request=req))
    assert is_unsent(httpx.PoolTimeout("full", request=req))
    assert not is_unsent(httpx.ReadTimeout("hang", request=req))
    assert not is_unsent(httpx.RemoteProtocolError("reset", request=req))
    assert not is_unsent(httpx.WriteError("broken", request=req))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"wait": 3}, "tenacity"),
        ({"max_replay_bytes": -1}, "replay"),
    ],
)
def test_policy_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kw)  # type: ignore[arg-type]
