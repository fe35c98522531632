"""The toxics a ``FaultProxy`` can apply: one way the network misbehaves each.

Each toxic describes one way the network misbehaves on one direction of a proxied connection:
``"downstream"`` is upstream-to-client (the response), ``"upstream"`` is client-to-upstream (the
request). ``toxicity`` is the probability that a given connection is affected, drawn once per
connection from the proxy's injected ``random.Random``. Validation happens on construction so a
wrong number in a test fails where it is written, not as a silently healthy proxy.

The lower-case factories (``latency(100)``, ``reset_peer()``...) mirror toxiproxy's toxic names
and parameters; units are milliseconds, bytes and kilobytes (1000 bytes) per second.

How they act on a connection is ``link``'s concern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = [
    "Bandwidth",
    "Direction",
    "Latency",
    "LimitData",
    "ResetAfterBytes",
    "ResetPeer",
    "SlowClose",
    "Timeout",
    "Toxic",
    "bandwidth",
    "latency",
    "limit_data",
    "reset_after_bytes",
    "reset_peer",
    "slow_close",
    "timeout",
]

Direction = Literal["upstream", "downstream"]


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class _ToxicBase:
    """Fields every toxic has: which direction it acts on and how many connections it hits."""

    kind: ClassVar[str] = "toxic"
    direction: Direction = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if self.direction not in ("upstream", "downstream"):
            raise ValueError(
                f"direction must be 'upstream' or 'downstream', got {self.direction!r}"
            )
        _non_negative("toxicity", self.toxicity)
        if self.toxicity > 1:
            raise ValueError(f"toxicity must be within [0, 1], got {self.toxicity}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency(_ToxicBase):
    """Delay every chunk by ``ms`` plus a uniform draw in ``[-jitter_ms, +jitter_ms]``.

    Delays run from each chunk's arrival, so a multi-chunk response is shifted, not stretched.
    """

    kind: ClassVar[str] = "latency"
    ms: float
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("ms", self.ms)
        _non_negative("jitter_ms", self.jitter_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class Bandwidth(_ToxicBase):
    """Pace data to at most ``kbps`` kilobytes (1000 bytes) per second, like toxiproxy's rate."""

    kind: ClassVar[str] = "bandwidth"
    kbps: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("kbps", self.kbps)
        if self.kbps == 0:
            raise ValueError("kbps must be > 0 (use timeout(0) to stop data entirely)")


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeout(_ToxicBase):
    """Hold all data in this direction; close the connection after ``ms`` (0: never close).

    Held data is released if the toxic is removed before the connection closes.
    """

    kind: ClassVar[str] = "timeout"
    ms: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("ms", self.ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResetPeer(_ToxicBase):
    """Reset the connection (RST via ``SO_LINGER`` 0, to both peers) ``after_ms`` after it applies.

    "Applies" means the later of the connection being accepted and the toxic being added.
    """

    kind: ClassVar[str] = "reset_peer"
    after_ms: float = 0.0

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("after_ms", self.after_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitData(_ToxicBase):
    """Pass ``limit`` bytes in this direction, then close the connection cleanly (FIN)."""

    kind: ClassVar[str] = "limit_data"
    limit: int

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _count("limit", self.limit)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResetAfterBytes(_ToxicBase):
    """Pass ``limit`` bytes in this direction, then reset (RST): a connection reset mid-response."""

    kind: ClassVar[str] = "reset_after_bytes"
    limit: int

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _count("limit", self.limit)


@dataclass(frozen=True, kw_only=True, slots=True)
class SlowClose(_ToxicBase):
    """Delay forwarding the end of stream (FIN) in this direction by ``delay_ms``."""

    kind: ClassVar[str] = "slow_close"
    delay_ms: float

    def __post_init__(self) -> None:
        _ToxicBase.__post_init__(self)
        _non_negative("delay_ms", self.delay_ms)


Toxic = Latency | Bandwidth | Timeout | ResetPeer | LimitData | ResetAfterBytes | SlowClose
"""Any toxic ``FaultProxy.add`` accepts."""


def latency(
    ms: float, jitter_ms: float = 0.0, direction: Direction = "downstream", toxicity: float = 1.0
) -> Latency:
    return Latency(ms=ms, jitter_ms=jitter_ms, direction=direction, toxicity=toxicity)


def bandwidth(kbps: float, direction: Direction = "downstream", toxicity: float = 1.0) -> Bandwidth:
    return Bandwidth(kbps=kbps, direction=direction, toxicity=toxicity)


def timeout(ms: float, direction: Direction = "downstream", toxicity: float = 1.0) -> Timeout:
    return Timeout(ms=ms, direction=direction, toxicity=toxicity)


def reset_peer(
    after_ms: float = 0.0, direction: Direction = "downstream", toxicity: float = 1.0
) -> ResetPeer:
    return ResetPeer(after_ms=after_ms, direction=direction, toxicity=toxicity)


def limit_data(limit: int, direction: Direction = "downstream", toxicity: float = 1.0) -> LimitData:
    return LimitData(limit=limit, direction=direction, toxicity=toxicity)


def reset_after_bytes(
    limit: int, direction: Direction = "downstream", toxicity: float = 1.0
) -> ResetAfterBytes:
    return ResetAfterBytes(limit=limit, direction=direction, toxicity=toxicity)


def slow_close(
    delay_ms: float, direction: Direction = "downstream", toxicity: float = 1.0
) -> SlowClose:
    return SlowClose(delay_ms=delay_ms, direction=direction, toxicity=toxicity)
