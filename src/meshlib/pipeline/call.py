"""One logical call's decisions, shared by both drivers: attempts, requeues, retries, deadline.

The drivers in ``transport`` only send, await or block, and sleep; every decision is made here,
without I/O, so the sync and async pipelines cannot drift apart. The order of the pipeline (see
``transport``) shows up as the order of the checks in ``after_error`` / ``after_response``:

1. the total deadline is checked first, so retries can never outlive the caller;
2. a failure before the request was sent is requeued at once on another endpoint, any method;
3. a failure after it was sent is retried only for idempotent calls with a replayable body,
   after a jittered backoff (or ``Retry-After``), if the retry can still finish in time;
4. every retry and requeue is withdrawn from the retry budget when it is *decided*.

When the call gives up, the caller gets the last real response or the last real exception; the
exception carries a note listing the attempts (never a wrapper like tenacity's ``RetryError``).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from meshlib.classify import Classifier
from meshlib.errors import DeadlineExceeded
from meshlib.extensions import DEADLINE, POLICY, PREFETCH
from meshlib.pipeline.attempt import Attempt
from meshlib.pipeline.settings import CallSettings
from meshlib.retry.budget import RetryBudget
from meshlib.retry.policy import backoff_delay, is_unsent, parse_retry_after
from meshlib.routing.router import Router, ServiceState
from meshlib.scope.context import (
    DEADLINE_HEADER,
    CallPolicy,
    current_deadline,
    current_policy,
    format_deadline,
)
from meshlib.scope.override import OVERRIDE_HEADER, current_override

if TYPE_CHECKING:
    from meshlib.traffic.chain import Choice

__all__ = ["Call", "CallSettings"]

_REQUEUE_SHARE = 0.2
_REQUEUE_MAX = 25
_OVERLOAD_DEFAULT = 1.0
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")


class Call:
    """State of one logical request to a mesh service across its attempts."""

    __slots__ = (
        "_budget",
        "_clock",
        "_connect",
        "_deadline",
        "_idempotent",
        "_max_attempts",
        "_per_try",
        "_requeue_cap",
        "_rng",
        "_settings",
        "_statuses",
        "attempts",
        "budget_exhausted",
        "choice",
        "history",
        "last",
        "last_in_panic",
        "policy",
        "reason",
        "replayable",
        "request",
        "requeues",
        "retries",
        "router",
        "service",
        "wall_timeouts",
    )

    def __init__(
        self,
        *,
        router: Router,
        service: ServiceState,
        request: httpx.Request,
        settings: CallSettings,
        budget: RetryBudget,
        rng: random.Random,
        choice: Choice | None = None,
        route_policy: CallPolicy | None = None,
    ) -> None:
        self.router = router
        self.service = service
        self.request = request
        self._settings = settings
        self._clock = router.clock
        self._rng = rng
        self.choice = choice
        policy = current_policy()
        ext = request.extensions.get(POLICY)
        if ext is not None:
            own = CallPolicy.coerce(ext)
            policy = policy.merged(own) if policy is not None else own
        self._connect: float | None = None
        self._statuses: frozenset[int] = frozenset()
        if choice is not None:
            # The route's timeout and retries sit between the configured defaults and the
            # caller's own policy (@outbound, extensions), which still wins.
            if route_policy is not None:
                policy = route_policy if policy is None else route_policy.merged(policy)
            if choice.route is not None:
                self._statuses = choice.route.retry_statuses
            self._connect = choice.target.connect_timeout
        self.policy = policy
        self._budget = budget if policy is None or policy.budget is None else policy.budget
        self._budget.deposit()
        now = self._clock.now()
        deadline = self._deadline_from(policy, now)
        self._deadline = deadline
        if policy is None:  # the usual call: the configured defaults
            self._per_try = settings.per_try_timeout
            self._max_attempts = settings.retry.max_attempts
            key = settings.idempotency_key
            idem = None
        else:
            self._per_try = (
                policy.per_try_timeout
                if policy.per_try_timeout is not None
                else settings.per_try_timeout
            )
            retries = policy.retries
            self._max_attempts = settings.retry.max_attempts if retries is None else retries + 1
            key = (
                policy.idempotency_key
                if policy.idempotency_key is not None
                else settings.idempotency_key
            )
            idem = policy.idempotent
        if key and request.method == "POST" and "idempotency-key" not in request.headers:
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        if idem is None:
            idem = request.method in settings.retry.idempotent_methods or (
                key is True and "idempotency-key" in request.headers
            )
        self._idempotent = idem
        self.replayable = isinstance(request.stream, httpx.ByteStream)
        self.wall_timeouts = request.extensions.get("timeout", {})
        self.attempts = 0
        self.retries = 0
        self.requeues = 0
        self._requeue_cap = -1
        self.budget_exhausted = False
        self.last: Attempt | None = None
        self.last_in_panic = False
        self.reason = "retry"
        self.history: list[str] = []

    def _deadline_from(self, policy: CallPolicy | None, now: float) -> float | None:
        timeout = policy.timeout if policy is not None else None
        if timeout is None:
            timeout = self._settings.timeout
        ctx = current_deadline()
        if ctx is not None:
            left = ctx.remaining()
            timeout = left if timeout is None else min(timeout, left)
        return None if timeout is None else now + timeout

    @property
    def idempotent(self) -> bool:
        """True when the call may be sent more than once (retried after sending, or hedged)."""
        return self._idempotent

    @property
    def budget(self) -> RetryBudget:
        """The retry budget this call draws its retries, requeues and hedges from."""
        return self._budget

    # -- before an attempt -------------------------------------------------------------------

    @property
    def prefetch(self) -> bool:
        """Read the body inside the retry loop: the client will read it all anyway (not a
        streamed call), and the call may retry, so a reset mid-body can still be retried."""
        return (
            self._idempotent
            and self._max_attempts > 1
            and bool(self.request.extensions.get(PREFETCH))
        )

    @property
    def wants_replay(self) -> bool:
        """True when a streamed body should be buffered so that a retry can replay it."""
        return self._idempotent and not self.replayable and self._max_attempts > 1

    def remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock.now()

    def start_attempt(self) -> Attempt:
        """Pick an endpoint (avoiding the last one) and dress the request for it."""
        # One clock reading for the pick, the attempt's start and the panic check: they are
        # microseconds apart, and the clock is read on every attempt.
        now = self._clock.now()
        deadline = self._deadline
        remaining = None if deadline is None else deadline - now
        if remaining is not None and remaining <= 0:
            raise self._deadline_error(None)
        last = self.last
        state = self.router.pick(self.service, last.state if last is not None else None, now)
        attempt = Attempt(state, self._clock, self.attempts, now)
        self.attempts += 1
        self.last = attempt
        # A dead endpoint that is not being probed was picked in panic mode.
        self.last_in_panic = not attempt.probe and not state.available(now)
        request = self.request
        per_try = self._per_try
        if self._connect is not None and remaining is None and per_try is None:
            request.extensions["timeout"] = self._timeouts(None)
        if remaining is not None or per_try is not None:
            request.extensions["timeout"] = self._timeouts(remaining)
            # The attempt's hard bound, head and body included: the per-try timeout or the time
            # left, whichever ends first (the engine enforces it however a server paces bytes).
            if per_try is None:
                bound = remaining
            elif remaining is None or per_try < remaining:
                bound = per_try
            else:
                bound = remaining
            assert bound is not None
            request.extensions[DEADLINE] = time.monotonic() + bound
        if remaining is not None and self._settings.propagate_deadline:
            attempt.headers.append((DEADLINE_HEADER, format_deadline(remaining)))
        pin = current_override()
        if pin is not None and OVERRIDE_HEADER not in request.headers:
            attempt.headers.append((OVERRIDE_HEADER, pin))
        return attempt

    def _timeouts(self, remaining: float | None) -> dict[str, float | None]:
        cap = self._per_try
        if remaining is not None:
            cap = remaining if cap is None else min(cap, remaining)
        out: dict[str, float | None] = {}
        for key in _TIMEOUT_KEYS:
            value = self.wall_timeouts.get(key)
            out[key] = cap if value is None else min(value, cap) if cap is not None else value
        connect = self._connect
        if connect is not None:
            # The resolver's ConnectTimeout bounds connecting only.
            current = out["connect"]
            out["connect"] = connect if current is None else min(current, connect)
        return out

    # -- after an attempt --------------------------------------------------------------------

    def after_error(self, attempt: Attempt, exc: Exception, classify: Classifier) -> float | None:
        """Classify a failed attempt; return the delay before the next one, or None to give up."""
        attempt.klass = klass = classify(self.request, None, exc)
        self.history.append(f"#{attempt.number + 1} {attempt.state.address}: {type(exc).__name__}")
        attempt.finish()
        if self._expired():
            return None
        if is_unsent(exc):
            if not self._requeue_allowed():
                return None
            self.requeues += 1
            self.reason = "requeue"
            return 0.0
        self.reason = "retry"
        if not (klass.retryable and self._can_retry()):
            return None
        return self._retry_delay(None, attempt)

    def after_response(
        self, attempt: Attempt, response: httpx.Response, classify: Classifier
    ) -> float | None:
        """Classify a response; return the delay before a retry, or None to return it."""
        attempt.klass = klass = classify(self.request, response, None)
        self.reason = "retry"
        retry_after = None
        if klass.overloaded or response.status_code == 503:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        if klass.overloaded:
            hold = retry_after if retry_after is not None else _OVERLOAD_DEFAULT
            attempt.state.metric.overloaded(self._clock.now() + min(hold, 60.0))
        if not klass.retryable and response.status_code not in self._statuses:
            return None
        self.history.append(
            f"#{attempt.number + 1} {attempt.state.address}: {response.status_code}"
        )
        if self._expired() or not self._can_retry():
            return None
        if retry_after is not None:
            remaining = self.remaining()
            too_long = retry_after > self._settings.retry.retry_after_max
            if too_long or (remaining is not None and retry_after >= remaining):
                self.history.append(f"Retry-After {retry_after:g}s is beyond the time left")
                return None
        return self._retry_delay(retry_after, attempt)

    def _can_retry(self) -> bool:
        return (
            self._idempotent
            and self.replayable
            and self.attempts - self.requeues < self._max_attempts
        )

    def _retry_delay(self, retry_after: float | None, attempt: Attempt) -> float | None:
        delay = backoff_delay(self._settings.retry, self.retries + 1, self._rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        remaining = self.remaining()
        if remaining is not None:
            # A retry that cannot finish in the time left is not started: it needs at least
            # as long as the attempt that just failed took.
            needed = delay + min(attempt.elapsed(), remaining)
            if needed >= remaining:
                self.history.append("no time left for another attempt")
                return None
        if not self._budget.try_withdraw():
            self.budget_exhausted = True
            self.history.append("retry budget exhausted")
            return None
        self.retries += 1
        return delay

    def _requeue_allowed(self) -> bool:
        if self._requeue_cap < 0:
            balance = self._budget.balance()
            self._requeue_cap = max(1, min(_REQUEUE_MAX, int(balance * _REQUEUE_SHARE)))
        if self.requeues >= self._requeue_cap or self.requeues >= len(self.service.eps) + 2:
            self.history.append("requeue limit reached")
            return False
        if not self._budget.try_withdraw():
            self.budget_exhausted = True
            self.history.append("retry budget exhausted")
            return False
        return True

    def expiry(self) -> Callable[[], Exception | None] | None:
        """``body_expired`` for a call with a deadline; None without one (nothing to check
        for each chunk of the body)."""
        return None if self._deadline is None else self.body_expired

    def body_expired(self) -> Exception | None:
        """While a body streams: the error to raise once the deadline has passed, else None.

        A slow-loris body cannot outlive the caller's deadline."""
        if self._deadline is None or self._clock.now() < self._deadline:
            return None
        return self._deadline_error(None)

    def _expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    # -- giving up ---------------------------------------------------------------------------

    def give_up(self, exc: Exception) -> Exception:
        """The exception to raise: DeadlineExceeded if time ran out, else ``exc`` with a note."""
        if self._expired() and not isinstance(exc, DeadlineExceeded):
            return self._deadline_error(exc)
        if self.attempts > 1 or self.budget_exhausted:
            exc.add_note(self.note())
        return exc

    def _deadline_error(self, cause: Exception | None) -> DeadlineExceeded:
        err = DeadlineExceeded(
            f"deadline exceeded calling mesh service {str(self.service.target)!r} "
            f"after {self.attempts} attempt(s)",
            request=self.request,
        )
        err.__cause__ = cause
        if self.history:
            err.add_note(self.note())
        return err

    def outcome(self, attempt: Attempt) -> dict[str, object]:
        """``response.extensions["mesh"]``: which endpoint answered, after how many attempts."""
        out: dict[str, object] = {
            "service": self.service.label,
            "endpoint": attempt.state.address,
            "attempts": self.attempts,
            "history": list(self.history),
        }
        if self.choice is not None:
            out["target"] = self.choice.target.id
            route = self.choice.route
            out["route"] = route.index if route is not None else None
        return out

    def note(self) -> str:
        return f"meshlib: {self.attempts} attempt(s) to {self.service.target}: " + "; ".join(
            self.history
        )
