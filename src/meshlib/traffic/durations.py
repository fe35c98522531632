"""Go's duration and boolean text formats, because Consul parses and prints both with Go's rules.

Clients send ``wait=1m30s`` and ``"TTL": "10s"``; the agent prints intervals back as Go's
``Duration.String()`` (``"1m30s"``, ``"100ms"``, ``"0s"``) and parses flags such as ``?enable=``
with ``strconv.ParseBool``. Mirroring those exact rules is what lets a client that works against
FakeConsul also work against a real agent (and vice versa: ``wait=10`` without a unit is a 400
on both).
"""

from __future__ import annotations

import re

__all__ = ["format_go_duration", "parse_go_bool", "parse_go_duration"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go accepts
    "\u03bcs": 1_000,  # greek mu, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_UNIT = r"(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_FULL = re.compile(rf"[-+]?(?:{_NUMBER}{_UNIT})+")
_PART = re.compile(rf"({_NUMBER})({_UNIT})")

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_duration(text: str) -> float:
    """Parse a Go duration (``"1m30s"``, ``"100ms"``, ``"-2h"``, ``"0"``) into seconds.

    Raises ``ValueError`` with Go's message for anything ``time.ParseDuration`` rejects, notably a
    bare number such as ``"10"`` (missing unit), so clients get the same 400 as from real Consul.
    """
    if text in ("0", "+0", "-0"):
        return 0.0
    if not text or _FULL.fullmatch(text) is None:
        raise ValueError(f'time: invalid duration "{text}"')
    sign = -1.0 if text.startswith("-") else 1.0
    total_ns = 0.0
    for number, unit in _PART.findall(text):
        total_ns += float(number) * _NS_PER_UNIT[unit]
    return sign * total_ns / 1e9


def _fraction(value: int, unit: int) -> str:
    """Render ``value / unit`` the way Go does: integer part, then trimmed decimal digits."""
    whole, rest = divmod(value, unit)
    if rest == 0:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(rest).rjust(digits, '0').rstrip('0')}"


def format_go_duration(seconds: float) -> str:
    """Render seconds as Go's ``Duration.String()``: ``"1h0m0s"``, ``"1m30s"``, ``"1.5ms"``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_fraction(u, 1_000)}\u00b5s"
    if u < 1_000_000_000:
        return f"{sign}{_fraction(u, 1_000_000)}ms"
    hours, rem = divmod(u, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    secs = _fraction(rem, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return f"{sign}{secs}"


def parse_go_bool(text: str) -> bool:
    """Parse a boolean like Go's ``strconv.ParseBool``; anything else raises ``ValueError``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')
