"""Hedging (backup requests): when a second attempt may be sent before the first has answered.

A replica that is slow *at random* (a GC pause, a noisy neighbour) sets the caller's p99, and a
load balancer can only avoid a replica that is slow *consistently*. Finagle's
``BackupRequestFilter`` answers with one backup request per call, sent to another replica once
the original has taken longer than a high quantile of recent latencies, the first response
winning; Envoy and gRPC call the same thing a hedging policy. This module holds the policy
only: the delay (a fixed one, or a quantile of the service's recent latencies with a floor) and
the share of extra load hedges may add. The pipeline sends and cancels; ``meshlib.load.window``
keeps the latencies.

The quantile defaults to ``1 - percent`` (p95 for the default 5% budget), as Finagle derives its
quantile from ``maxExtraLoad``: hedging at the p95 sends about one backup per twenty calls,
which is what the budget allows, so the budget rarely has to refuse one. A hedge is also drawn
from the service's retry budget, so hedges and retries together never exceed it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["HedgeBudgetPolicy", "HedgePolicy", "parse_hedge"]

_QUANTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
_DELAY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)$")


@dataclass(frozen=True, kw_only=True, slots=True)
class HedgePolicy:
    """When to send a backup attempt: after ``delay`` seconds, or at ``quantile`` of recent
    latencies (never sooner than ``min_delay``). ``quantile=None`` means ``1 - percent`` of the
    hedge budget (p95 by default)."""

    delay: float | None = None
    """A fixed delay in seconds; when set, the quantile is not used."""
    quantile: float | None = None
    """A quantile in (0, 1) of the service's recent attempt latencies, e.g. 0.99 for p99."""
    min_delay: float = 0.005
    """The floor under a quantile delay: no backup before this many seconds."""
    min_samples: int = 20
    """Latencies needed before a quantile is trusted; until then no backup is sent."""

    def __post_init__(self) -> None:
        if self.delay is not None and not (math.isfinite(self.delay) and self.delay > 0):
            raise ValueError(f"hedge delay must be a positive number of seconds, got {self.delay}")
        if self.quantile is not None and not (0.0 < self.quantile < 1.0):
            raise ValueError(f"hedge quantile must be within (0, 1), got {self.quantile}")
        if not (math.isfinite(self.min_delay) and self.min_delay >= 0):
            raise ValueError(f"hedge min_delay must be >= 0 seconds, got {self.min_delay}")
        if self.min_samples < 1:
            raise ValueError(f"hedge min_samples must be >= 1, got {self.min_samples}")

    @classmethod
    def coerce(cls, value: object, *, what: str = "hedge") -> HedgePolicy | None:
        """A policy from what ``@outbound(hedge=...)`` accepts; None means "no hedging".

        ``True`` (the quantile default), ``False`` or ``None`` (off), a number of seconds
        (a fixed delay), a string (``"p99"``, ``"40ms"``, ``"0.05s"``) or a ``HedgePolicy``."""
        if isinstance(value, HedgePolicy):
            return value
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, int | float):
            return cls(delay=float(value))
        if isinstance(value, str):
            return parse_hedge(value, what=what)
        raise ValueError(
            f"{what} must be True, False, a delay in seconds, 'pNN', 'NNms' or a HedgePolicy, "
            f"got {value!r}"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class HedgeBudgetPolicy:
    """How much extra load hedges may add to a service, as a ``RetryBudget`` of their own."""

    percent: float = 0.05
    """Hedges per call over the window (0.05: at most 5% more upstream requests)."""
    min_per_sec: float = 0.0
    """A floor of hedges per second whatever the traffic (Finagle's backups have none)."""
    ttl: float = 10.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.percent) and 0.0 < self.percent <= 1.0):
            raise ValueError(
                f"hedge budget percent must be within (0, 100], got {self.percent * 100:g}"
            )


def parse_hedge(text: str, *, what: str = "hedge") -> HedgePolicy | None:
    """A policy from ``on`` (the default quantile), ``off``, ``p99``, ``p99.9``, ``40ms`` or
    ``0.05s``; None for off."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1", "auto"):
        return HedgePolicy()
    if value in ("off", "false", "no", "0", "none"):
        return None
    q = _QUANTILE.match(value)
    if q is not None:
        quantile = float(q.group(1)) / 100.0
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"{what}: quantile {text!r} must be within p1..p99.9")
        return HedgePolicy(quantile=quantile)
    d = _DELAY.match(value)
    if d is not None:
        seconds = float(d.group(1)) * (0.001 if d.group(2) == "ms" else 1.0)
        if seconds <= 0:
            raise ValueError(f"{what}: delay {text!r} must be positive")
        return HedgePolicy(delay=seconds)
    raise ValueError(
        f"{what}: {text!r} is not a hedge setting; use on, off, a quantile (p95, p99) "
        "or a fixed delay with a unit (40ms, 0.05s)"
    )
