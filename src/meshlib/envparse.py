"""Parsers for environment values: durations, booleans, numbers and per-service lists.

``meshlib.config`` reads ``os.environ`` and hands each value here. Every parser names the
variable, the value it got (never a secret: values of variables that may hold one are replaced)
and what it accepts, so a typo in a deployment fails at start with a message that says how to
fix it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from meshlib.errors import ConfigError

__all__ = [
    "build",
    "parse_bool",
    "parse_duration",
    "parse_int",
    "parse_number",
    "per_service",
    "shown",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SECRET_HINTS = ("TOKEN", "AUTH", "PASSWORD", "SECRET")


def shown(name: str, value: str) -> str:
    """The value as it may appear in an error: secrets are replaced, never echoed."""
    if any(h in name.upper() for h in _SECRET_HINTS):
        return "<redacted>"
    return repr(value)


def parse_duration(name: str, value: str) -> float:
    """Seconds from ``"10"``, ``"0.5"``, ``"250ms"``, ``"10s"``, ``"1m"`` or ``"1h"``."""
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(
            f"{name}={shown(name, value)} is not a duration; use seconds (10, 0.5) "
            "or a number with a unit (250ms, 10s, 1m, 1h)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(name: str, value: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case)."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={shown(name, value)} is not a boolean; use true or false")


def parse_int(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={shown(name, value)} is not an integer") from None


def parse_number(name: str, value: str) -> float:
    try:
        number = float(value.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"{name}={shown(name, value)} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}={shown(name, value)} must be finite")
    return number


def build(names: str, cls: Any, kw: dict[str, Any]) -> Any:
    """Construct a policy, turning its validation error into a ConfigError naming the variables."""
    try:
        return cls(**kw)
    except ValueError as exc:
        raise ConfigError(f"{names}: {exc}") from None


def per_service(name: str, value: str) -> dict[str, str]:
    """``users=100;orders=20`` → {"users": "100", "orders": "20"}."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        service, sep, setting = part.partition("=")
        if not sep or not service.strip() or not setting.strip():
            raise ConfigError(
                f"{name}: entry {part.strip()!r} must look like service=value; separate "
                "services with ';' (e.g. users=100;orders=20)"
            )
        out[service.strip().lower()] = setting.strip()
    return out
