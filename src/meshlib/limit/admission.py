"""Inbound admission: whether a request may reach the application, decided at once and I/O-free.

The inbound middleware asks ``Admission.check`` before the application runs and gets either a
``Ticket`` (admitted; hand it back with ``done`` when the response is finished) or a
``Refusal`` (the status, the reason and the ``Retry-After`` to answer with). Nothing here waits:
an overloaded server that queues only moves the queue into its own memory and answers late, so
every refusal is immediate and tells the caller when to come back.

The checks, in order, and why in this order:

1. **Deadline** (``shed_expired``): a request whose propagated budget is already spent (or is
   at most ``min_deadline``) is refused with **504**, before it costs a token or a slot, because
   no answer can still be useful to its caller. gRPC fails such a call with
   ``DEADLINE_EXCEEDED`` before the handler runs (504 in its HTTP mapping), and Envoy answers
   504 for a request whose time ran out; 504 says "time", not "load", so a caller does not
   mistake it for overload and back off from a healthy server.
2. **Concurrency** (``max_in_flight``, fixed or AIMD-adaptive): above the limit, **503** with
   ``Retry-After``, as Envoy's adaptive concurrency filter answers 503. The limit is the whole
   server's, not per caller: it protects the process, whose capacity does not depend on who
   asks.
3. **Rate** (``rate``, a token bucket per caller key): over the rate, **429** with
   ``Retry-After`` set to the time until the caller's next token (RFC 6585). A refusal here
   gives the concurrency slot back at once, so a limited caller never holds capacity.

The adaptive limit learns from each admitted request's latency, measured from ``check`` to
``done`` on the injected clock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from meshlib.clock import Clock
from meshlib.limit.aimd import AimdLimit
from meshlib.limit.keyed import KeyedRateLimit
from meshlib.limit.limits import ConcurrencyLimit

__all__ = ["ANONYMOUS", "Admission", "AdmissionPolicy", "Refusal", "Ticket"]

ANONYMOUS = "<anonymous>"
"""The rate-limit key shared by requests whose caller is not known."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AdmissionPolicy:
    """What the inbound middleware admits; the defaults admit everything but spent deadlines."""

    rate: float | None = None
    """Requests per second per caller key (``None``: no rate limit)."""
    burst: float | None = None
    """Token bucket size; defaults to one second of ``rate`` (at least 1)."""
    max_callers: int = 1024
    """Caller keys with a bucket of their own; beyond, callers share one overflow bucket."""
    max_in_flight: int | None = None
    """Requests in the application at once (``None``: no limit); the ceiling when adaptive."""
    adaptive: bool = False
    """Move the in-flight limit by AIMD on latency, between ``min_in_flight`` and the ceiling."""
    min_in_flight: int = 1
    latency_target: float = 0.25
    """Adaptive only: a request slower than this (seconds) is a congestion signal."""
    retry_after: float = 1.0
    """``Retry-After`` seconds sent with 503 (a rate refusal sends its own exact wait)."""
    shed_expired: bool = True
    """Refuse with 504 a request whose propagated deadline has passed."""
    min_deadline: float = 0.0
    """Also refuse a request with at most this many seconds left (it cannot be served in time)."""
    caller_header: str | None = None
    """Request header naming the caller, for the middleware's default caller key (lower case)."""

    def __post_init__(self) -> None:
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"inbound rate must be a positive number per second, got {self.rate}")
        if self.burst is not None and not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"inbound burst must be a number >= 1, got {self.burst}")
        if self.max_callers < 1:
            raise ValueError(f"max_callers must be >= 1, got {self.max_callers}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.adaptive and self.max_in_flight is None:
            raise ValueError(
                "the adaptive limit needs max_in_flight: the ceiling it starts at and never passes"
            )
        if self.min_in_flight < 1 or (
            self.max_in_flight is not None and self.min_in_flight > self.max_in_flight
        ):
            raise ValueError(
                f"min_in_flight must be within [1, max_in_flight], got {self.min_in_flight}"
            )
        for name in ("latency_target",):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        for name in ("retry_after", "min_deadline"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")

    @property
    def limits(self) -> bool:
        """True when any rate or concurrency limit is configured."""
        return self.rate is not None or self.max_in_flight is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted and what to answer."""

    status: int
    """429 (rate), 503 (concurrency) or 504 (deadline)."""
    reason: str
    """``rate``, ``concurrency`` or ``deadline``."""
    retry_after: int | None
    """Whole seconds for ``Retry-After`` (RFC 9110 delta-seconds), or None to send none."""
    message: str


class Ticket:
    """An admitted request; ``done`` (once, idempotent) frees its slot and reports its latency."""

    __slots__ = ("_admission", "_in_flight", "_open", "_started")

    def __init__(self, admission: Admission, started: float, in_flight: int) -> None:
        self._admission = admission
        self._started = started
        self._in_flight = in_flight
        self._open = True

    def done(self, failed: bool = False) -> None:
        if not self._open:
            return
        self._open = False
        self._admission._finished(self._started, self._in_flight, failed)


class Admission:
    """One server's admission state: the buckets, the in-flight count and the counters."""

    def __init__(self, policy: AdmissionPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self.rate = (
            KeyedRateLimit(policy.rate, policy.burst, policy.max_callers, clock)
            if policy.rate is not None
            else None
        )
        self.concurrency = (
            ConcurrencyLimit(policy.max_in_flight, max_waiters=0)
            if policy.max_in_flight is not None
            else None
        )
        self.adaptive = (
            AimdLimit(
                minimum=policy.min_in_flight,
                maximum=policy.max_in_flight,
                latency_target=policy.latency_target,
                clock=clock,
            )
            if policy.adaptive and policy.max_in_flight is not None
            else None
        )
        self._lock = threading.Lock()
        self.admitted = 0
        self.refused = {"rate": 0, "concurrency": 0, "deadline": 0}

    def check(self, key: str | None, budget: float | None) -> Ticket | Refusal:
        """Admit or refuse one request from caller ``key`` with ``budget`` seconds left."""
        p = self.policy
        if p.shed_expired and budget is not None and budget <= p.min_deadline:
            return self._refuse(
                Refusal(
                    504,
                    "deadline",
                    None,
                    "the caller's deadline had passed when the request arrived; not handled",
                )
            )
        in_flight = 0
        if self.concurrency is not None:
            if not self.concurrency.try_acquire():
                limit = self.concurrency.limit
                return self._refuse(
                    Refusal(
                        503,
                        "concurrency",
                        math.ceil(p.retry_after),
                        f"overloaded: {limit} requests in progress, the limit; retry later",
                    )
                )
            in_flight = self.concurrency.in_flight
        if self.rate is not None:
            wait = self.rate.take(key if key is not None else ANONYMOUS)
            if wait > 0.0:
                if self.concurrency is not None:
                    self.concurrency.release()
                return self._refuse(
                    Refusal(
                        429,
                        "rate",
                        max(1, math.ceil(wait)),
                        f"rate limit of {p.rate:g} requests/s exceeded; retry later",
                    )
                )
        with self._lock:
            self.admitted += 1
        return Ticket(self, self._clock.now(), in_flight)

    def _refuse(self, refusal: Refusal) -> Refusal:
        with self._lock:
            self.refused[refusal.reason] += 1
        return refusal

    def _finished(self, started: float, in_flight: int, failed: bool) -> None:
        if self.concurrency is None:
            return
        self.concurrency.release()
        if self.adaptive is not None:
            latency = self._clock.now() - started
            self.concurrency.limit = self.adaptive.sample(latency, in_flight, failed)

    @property
    def in_flight(self) -> int:
        return self.concurrency.in_flight if self.concurrency is not None else 0

    @property
    def limit(self) -> int | None:
        """The in-flight limit now (it moves when adaptive), or None without one."""
        return self.concurrency.limit if self.concurrency is not None else None

    def snapshot(self) -> dict[str, object]:
        """Counters and limits as plain data, for the admin endpoint and tests."""
        with self._lock:
            refused = dict(self.refused)
            admitted = self.admitted
        return {
            "admitted": admitted,
            "rejected": {"rate": refused["rate"], "concurrency": refused["concurrency"]},
            "shed": {"deadline": refused["deadline"]},
            "in_flight": self.in_flight,
            "limit": self.limit,
            "rate": self.policy.rate,
            "callers": len(self.rate) if self.rate is not None else 0,
        }
