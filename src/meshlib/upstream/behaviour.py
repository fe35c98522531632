"""How an upstream misbehaves (``UpstreamBehaviour``) and what it counted (``UpstreamStats``).

Validated on construction, so a bad ``/control`` document or command line is refused with a
message naming the field, and the running server keeps its old behaviour.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ServiceQueue", "UpstreamBehaviour", "UpstreamStats"]


def _check_text(field_name: str, value: object) -> None:
    """Reject text that cannot be sent as an HTTP header value (it would corrupt the framing)."""
    if not isinstance(value, str):
        raise TypeError(f"{field_name} must be a str, got {type(value).__name__}")
    if not value or not value.isascii() or not value.isprintable():
        raise ValueError(f"{field_name} must be non-empty printable ASCII, got {value!r}")


def _check_number(field_name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field_name} must be a number, got {type(value).__name__}")
    if math.isfinite(high) and not low <= value <= high:
        raise ValueError(f"{field_name} must be within [{low:g}, {high:g}], got {value}")
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{field_name} must be a finite number >= {low:g}, got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class UpstreamBehaviour:
    """How one upstream answers: its name, added latency, slow tail, failures, or not at all.

    Frozen so a behaviour can be shared between threads and swapped atomically; validated on
    construction so a typo in a test or a ``/control`` document fails loudly instead of silently
    producing a healthy upstream. ``seed`` makes the slow/fail draws reproducible.
    """

    name: str
    latency: float = 0.0
    """Seconds added to every response (failures included)."""
    slow_fraction: float = 0.0
    """Fraction of requests that get ``slow_extra`` more seconds on top of ``latency``."""
    slow_extra: float = 0.0
    """Seconds a slow request waits on top of ``latency`` (e.g. 20% of requests +50 ms); with
    ``slow_fraction=0.02, slow_extra=0.1`` a replica stalls at random, 2% of requests +100 ms."""
    capacity: float = 0.0
    """Requests per second the upstream can serve (0: unbounded). Beyond it requests queue in
    arrival order, each taking ``1 / capacity`` seconds of the one server, so an overloaded
    upstream answers ever later, and it still spends its time on requests whose caller has
    gone, as a real saturated service does."""
    fail_fraction: float = 0.0
    """Fraction of requests answered with ``fail_status`` instead of the body."""
    fail_status: int = 503
    retry_after: str | None = None
    """``Retry-After`` header value sent with every failure response, if set."""
    hang: bool = False
    """Read requests but never answer them (the connection stays open until the client gives up)."""
    body: bytes = b"ok"
    seed: int | None = None
    """Seed for the slow/fail draws; each ``set_behaviour`` with a seed re-seeds the RNG."""

    def __post_init__(self) -> None:
        _check_text("name", self.name)
        _check_number("latency", self.latency, 0.0, math.inf)
        _check_number("slow_fraction", self.slow_fraction, 0.0, 1.0)
        _check_number("slow_extra", self.slow_extra, 0.0, math.inf)
        _check_number("fail_fraction", self.fail_fraction, 0.0, 1.0)
        _check_number("capacity", self.capacity, 0.0, math.inf)
        if isinstance(self.fail_status, bool) or not isinstance(self.fail_status, int):
            raise TypeError(f"fail_status must be an int, got {type(self.fail_status).__name__}")
        if not 200 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be within [200, 599], got {self.fail_status}")
        if self.retry_after is not None:
            _check_text("retry_after", self.retry_after)
        if not isinstance(self.hang, bool):
            raise TypeError(f"hang must be a bool, got {type(self.hang).__name__}")
        if not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes, got {type(self.body).__name__}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")

    def to_json(self) -> dict[str, Any]:
        """The behaviour as a JSON-ready dict (``body`` as UTF-8 text), as ``/control`` shows it."""
        doc = dataclasses.asdict(self)
        doc["body"] = self.body.decode("utf-8", errors="replace")
        return doc

    def updated(self, fields: Mapping[str, Any]) -> UpstreamBehaviour:
        """A copy with ``fields`` replaced, as ``POST /control`` does; ``body`` may be text."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(unknown)}")
        changes = dict(fields)
        if isinstance(changes.get("body"), str):
            changes["body"] = changes["body"].encode("utf-8")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """A consistent snapshot of one upstream's counters (``/control`` requests are not counted)."""

    total: int
    failures: int
    by_path: Mapping[str, int]
    connections: int
    """Connections accepted since start (or the last reset): fewer than ``total`` means reuse."""
    open_connections: int
    recent_headers: tuple[tuple[tuple[str, str], ...], ...]
    """Headers of the last N requests, oldest first, names lower-cased, in arrival order."""

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "failures": self.failures,
            "by_path": dict(self.by_path),
            "connections": self.connections,
            "open_connections": self.open_connections,
            "recent_headers": [[list(pair) for pair in headers] for headers in self.recent_headers],
        }


class ServiceQueue:
    """The delay of each reply: the behaviour's latency, a slow draw's extra, and, with a
    bounded ``capacity``, the wait for the one server (a FIFO queue, ``1 / capacity`` seconds
    per request). A new behaviour (``set_behaviour``, ``POST /control``) starts with an empty
    queue, so one measurement's backlog never spills into the next."""

    __slots__ = ("_behaviour", "_free_at")

    def __init__(self) -> None:
        self._free_at = 0.0
        self._behaviour: UpstreamBehaviour | None = None

    def delay(self, b: UpstreamBehaviour, slow: bool) -> float:
        delay = b.latency + b.slow_extra if slow else b.latency
        if b.capacity <= 0.0:
            return delay
        if b is not self._behaviour:
            self._behaviour = b
            self._free_at = 0.0
        now = time.monotonic()
        done = max(now, self._free_at) + 1.0 / b.capacity
        self._free_at = done
        return delay + (done - now)
