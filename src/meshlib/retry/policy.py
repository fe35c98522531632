"""Retry policy: how many attempts, how long to wait between them, and which calls may retry.

The vocabulary is tenacity's, which Python users already know: ``wait`` is any tenacity wait
strategy (default ``exponential_wait(0.025, 0.25)``, tenacity's ``wait_exponential``: 25 ms
doubling to 250 ms, Envoy's defaults) and meshlib applies *full jitter* on top with an injected
RNG (Envoy, AWS "exponential backoff and jitter"), so tests are deterministic. tenacity is
consulted only when a retry actually happens: the success path builds no tenacity object (an
``AsyncRetrying`` per call costs 20-36 us, more than the whole mesh), and tenacity is imported
at the first retry, not with meshlib (it is 4 ms of a cold start).

Which calls may be retried follows Finagle and Linkerd:

* a failure **before the request was sent** (connection refused or timed out, pool timeout) is
  *requeued* at once on another endpoint, for any method, POST included: the server never saw it;
* a failure **after** it was sent is retried only when the call is idempotent (GET, HEAD,
  OPTIONS, TRACE, PUT, DELETE, or marked ``idempotent=True``) and its body can be replayed
  (bytes, or a stream no larger than ``max_replay_bytes``, 64 KiB like Linkerd 2).

``Retry-After`` (seconds or an HTTP date) is honoured, but never past the remaining deadline or
``retry_after_max``: a longer wait returns the response to the caller at once.
"""

from __future__ import annotations

import email.utils
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = [
    "IDEMPOTENT_METHODS",
    "RetryPolicy",
    "backoff_delay",
    "describe_wait",
    "exponential_wait",
    "is_unsent",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class ExponentialWait:
    """tenacity's ``wait_exponential(multiplier=base, max=cap)``, built at its first use.

    A wait strategy like any other tenacity one (called with the retry state), equal to another
    with the same bounds, so two default configurations compare equal."""

    __slots__ = ("_tenacity", "base", "cap")

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self._tenacity: Any = None

    def __call__(self, retry_state: Any) -> float:
        if self._tenacity is None:
            import tenacity

            self._tenacity = tenacity.wait_exponential(multiplier=self.base, max=self.cap)
        return float(self._tenacity(retry_state))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExponentialWait):
            return NotImplemented
        return (self.base, self.cap) == (other.base, other.cap)

    def __hash__(self) -> int:
        return hash((self.base, self.cap))

    def __repr__(self) -> str:
        return f"exponential_wait({self.base!r}, {self.cap!r})"


def exponential_wait(base: float, cap: float) -> ExponentialWait:
    """tenacity's ``wait_exponential``: ``base`` doubling up to ``cap`` seconds."""
    return ExponentialWait(base, cap)


def describe_wait(wait: Any) -> str | None:
    """A short text for a wait strategy (``exponential(25ms..250ms)``), None if not ours to read."""
    if isinstance(wait, ExponentialWait):
        return f"exponential({wait.base:g}s..{wait.cap:g}s)"
    tenacity = sys.modules.get("tenacity")  # a tenacity object means tenacity is loaded
    if tenacity is not None and isinstance(wait, tenacity.wait_exponential):
        return f"exponential({wait.multiplier:g}s..{wait.max:g}s)"
    return None


def _default_wait() -> ExponentialWait:
    return exponential_wait(0.025, 0.25)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a call is retried; validated at construction."""

    max_attempts: int = 3
    wait: Any = field(default_factory=_default_wait)
    """A tenacity wait strategy; its value is the *upper bound* of a full-jitter draw."""
    jitter: bool = True
    retry_after_max: float = 10.0
    max_replay_bytes: int = 64 * 1024
    idempotent_methods: frozenset[str] = IDEMPOTENT_METHODS

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 10:
            raise ValueError(f"max_attempts must be within [1, 10], got {self.max_attempts}")
        if not callable(self.wait):
            raise ValueError(f"wait must be a tenacity wait strategy, got {self.wait!r}")
        if not (math.isfinite(self.retry_after_max) and self.retry_after_max >= 0):
            raise ValueError(f"retry_after_max must be >= 0 seconds, got {self.retry_after_max}")
        if self.max_replay_bytes < 0:
            raise ValueError(f"max_replay_bytes must be >= 0, got {self.max_replay_bytes}")


def backoff_delay(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
    import tenacity

    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = retry_number
    high = float(policy.wait(state))
    return rng.uniform(0.0, high) if policy.jitter else high


def is_unsent(exc: BaseException) -> bool:
    """True when the failure happened before any byte of the request reached a server."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def parse_retry_after(value: str | None, *, wall_now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if wall_now is None else wall_now
    return max(0.0, when.timestamp() - now)
