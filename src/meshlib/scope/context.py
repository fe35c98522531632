"""Per-call policy and deadlines that flow through ``contextvars`` to every mesh request.

``@meshlib.outbound(...)`` and the inbound middleware set them; the transport reads them when a
request starts. Because they live in the context, they also reach requests made by third-party
SDKs that were handed a meshlib client, and they follow asyncio tasks and ``to_thread``.

A ``Deadline`` carries its own clock, so a deadline set against real time can still be read by a
transport that runs on an injected clock: the transport snapshots ``remaining()`` once, when the
call starts, and counts down on its own clock from there. Nested deadlines keep the earliest.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.retry.budget import RetryBudget
from meshlib.retry.hedge import HedgePolicy

__all__ = [
    "DEADLINE_HEADER",
    "CallPolicy",
    "Deadline",
    "current_deadline",
    "current_policy",
    "deadline_scope",
    "format_deadline",
    "parse_deadline",
    "policy_scope",
]

DEADLINE_HEADER = "x-mesh-deadline-ms"
"""Outbound mesh requests carry the caller's remaining time budget here, in milliseconds.

Relative, like gRPC's ``grpc-timeout``, so no clock synchronisation between hosts is needed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CallPolicy:
    """Overrides for the calls made in a scope (``@outbound``) or by one request (extensions).

    ``None`` means "keep the configured value".
    """

    timeout: float | None = None
    """Total deadline in seconds, above all retries."""
    per_try_timeout: float | None = None
    retries: int | None = None
    """Extra attempts after the first (``retries=2`` means up to 3 attempts)."""
    idempotent: bool | None = None
    budget: RetryBudget | None = None
    idempotency_key: bool | None = None
    limit_wait: bool | None = None
    """When a rate or concurrency limit is hit: wait (up to the deadline) or fail fast."""
    hedge: HedgePolicy | bool | float | str | None = None
    """Hedged (backup) attempts for idempotent calls: ``True``, ``False``, a fixed delay in
    seconds, ``"p99"`` / ``"40ms"``, or a ``HedgePolicy`` (see ``meshlib.retry.hedge``)."""

    def __post_init__(self) -> None:
        if self.hedge is not None and not isinstance(self.hedge, HedgePolicy | bool):
            # Validated (and normalised) here, so a typo fails where the policy is written.
            object.__setattr__(self, "hedge", HedgePolicy.coerce(self.hedge) or False)
        for name in ("timeout", "per_try_timeout"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.retries is not None and not 0 <= self.retries <= 9:
            raise ValueError(f"retries must be within [0, 9], got {self.retries}")

    def merged(self, inner: CallPolicy) -> CallPolicy:
        """``inner``'s settings where given, else this policy's (inner scopes win)."""
        changes = {f.name: getattr(inner, f.name) for f in fields(inner)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def coerce(cls, value: Any) -> CallPolicy:
        """A ``CallPolicy`` from itself or a mapping (``extensions={"mesh": {...}}``)."""
        if isinstance(value, CallPolicy):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = set(value) - known
            if unknown:
                raise ValueError(
                    f"unknown mesh option(s) {sorted(unknown)}; accepted: {sorted(known)}"
                )
            return cls(**dict(value))
        raise ValueError(f"extensions['mesh'] must be a CallPolicy or a dict, got {value!r}")


class Deadline:
    """An absolute point in time on a given clock."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.at = at
        self.clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        return cls(clock.now() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock.now()

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"


_policy: contextvars.ContextVar[CallPolicy | None] = contextvars.ContextVar(
    "meshlib_policy", default=None
)
_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "meshlib_deadline", default=None
)


def current_policy() -> CallPolicy | None:
    return _policy.get()


def current_deadline() -> Deadline | None:
    return _deadline.get()


@contextlib.contextmanager
def policy_scope(policy: CallPolicy) -> Iterator[CallPolicy]:
    """Apply ``policy`` to mesh calls in this scope (merged over any enclosing policy)."""
    outer = _policy.get()
    effective = outer.merged(policy) if outer is not None else policy
    token = _policy.set(effective)
    try:
        yield effective
    finally:
        _policy.reset(token)


@contextlib.contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Cap mesh calls in this scope by ``deadline`` (the earlier of it and any outer one)."""
    outer = _deadline.get()
    if deadline is None or (outer is not None and outer.remaining() <= deadline.remaining()):
        yield outer
        return
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def format_deadline(remaining: float) -> str:
    """Header value for ``remaining`` seconds (whole milliseconds, at least 1)."""
    return str(max(1, int(remaining * 1000)))


def parse_deadline(value: object, *, cap: float = 3600.0) -> float | None:
    """Seconds from an incoming deadline header; None if absent or malformed (never trusted
    beyond ``cap``, so a hostile caller cannot make us wait for days).

    Only 1 to 12 ASCII digits count: ``str.isdigit`` also accepts superscripts and other
    scripts' digits (``"²"``, ``"١٢"``), which ``int`` then refuses or reads, so a garbage
    header is ignored here and never raises."""
    if not isinstance(value, str):
        return None
    match = _DEADLINE_DIGITS.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    return min(int(match.group()) / 1000.0, cap)


_DEADLINE_DIGITS = re.compile(r"[0-9]{1,12}", re.ASCII)
