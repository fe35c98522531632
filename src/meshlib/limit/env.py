"""Inbound admission and outbound limits (``MESH_INBOUND_*``, ``MESH_RATE_LIMIT``, ...) from env.

``meshlib.config`` is the only reader of ``os.environ``; it passes the mapping and its own value
parsers here (as it does for the Consul settings), so every variable keeps the same syntax and
the same kind of error everywhere: a ``ConfigError`` that names the variable, the value it got
and what it accepts. The variables are documented in docs/configuration.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from meshlib.errors import ConfigError
from meshlib.limit.admission import AdmissionPolicy
from meshlib.limit.limits import LimitPolicy

__all__ = ["admission_from_env", "limits_from_env"]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_INTS = {
    "MESH_INBOUND_MAX_IN_FLIGHT": "max_in_flight",
    "MESH_INBOUND_MIN_IN_FLIGHT": "min_in_flight",
    "MESH_INBOUND_MAX_CALLERS": "max_callers",
}
_DURATIONS = {
    "MESH_INBOUND_LATENCY_TARGET": "latency_target",
    "MESH_INBOUND_RETRY_AFTER": "retry_after",
    "MESH_INBOUND_MIN_DEADLINE": "min_deadline",
}
_BOOLS = {"MESH_INBOUND_ADAPTIVE": "adaptive", "MESH_INBOUND_SHED_EXPIRED": "shed_expired"}


def admission_from_env(
    env: Mapping[str, str],
    parse_bool: Callable[[str, str], bool],
    parse_duration: Callable[[str, str], float],
    number: Callable[[str, str], float],
    integer: Callable[[str, str], int],
) -> AdmissionPolicy:
    """``MESH_INBOUND_*`` as an ``AdmissionPolicy`` (the defaults for variables not set)."""
    kw: dict[str, Any] = {}
    spec = env.get("MESH_INBOUND_RATE_LIMIT", "").strip()
    if spec and spec.lower() not in ("none", "off"):
        rate, _, burst = spec.partition(":")
        kw["rate"] = number("MESH_INBOUND_RATE_LIMIT", rate.strip().removesuffix("/s"))
        if burst.strip():
            kw["burst"] = number("MESH_INBOUND_RATE_LIMIT", burst)
    for var, attr in _INTS.items():
        if env.get(var, "").strip():
            kw[attr] = integer(var, env[var])
    for var, attr in _DURATIONS.items():
        if env.get(var, "").strip():
            kw[attr] = parse_duration(var, env[var])
    for var, attr in _BOOLS.items():
        if env.get(var, "").strip():
            kw[attr] = parse_bool(var, env[var])
    header = env.get("MESH_INBOUND_CALLER_HEADER", "").strip()
    if header:
        if not _HEADER_NAME.fullmatch(header):
            raise ConfigError(
                f"MESH_INBOUND_CALLER_HEADER={header!r} is not an HTTP header name; use letters, "
                "digits and '-' (e.g. x-mesh-caller)"
            )
        kw["caller_header"] = header.lower()
    if kw.get("adaptive") and "max_in_flight" not in kw:
        raise ConfigError(
            "MESH_INBOUND_ADAPTIVE=true needs MESH_INBOUND_MAX_IN_FLIGHT: the ceiling the "
            "adaptive limit starts at and never passes (e.g. MESH_INBOUND_MAX_IN_FLIGHT=100)"
        )
    try:
        return AdmissionPolicy(**kw)
    except ValueError as exc:
        raise ConfigError(f"MESH_INBOUND_*: {exc}") from None


def _per_service(name: str, value: str) -> dict[str, str]:
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


def limits_from_env(
    env: Mapping[str, str],
    parse_bool: Callable[[str, str], bool],
    parse_duration: Callable[[str, str], float],
    number: Callable[[str, str], float],
    integer: Callable[[str, str], int],
) -> dict[str, LimitPolicy]:
    """The outbound per-service limits from ``MESH_RATE_LIMIT`` / ``MESH_MAX_IN_FLIGHT``."""
    rates = _per_service("MESH_RATE_LIMIT", env.get("MESH_RATE_LIMIT", ""))
    inflight = _per_service("MESH_MAX_IN_FLIGHT", env.get("MESH_MAX_IN_FLIGHT", ""))
    wait = (
        parse_bool("MESH_LIMIT_WAIT", env["MESH_LIMIT_WAIT"]) if "MESH_LIMIT_WAIT" in env else True
    )
    max_wait = (
        parse_duration("MESH_LIMIT_MAX_WAIT", env["MESH_LIMIT_MAX_WAIT"])
        if "MESH_LIMIT_MAX_WAIT" in env
        else 1.0
    )
    limits: dict[str, LimitPolicy] = {}
    for service in sorted(set(rates) | set(inflight)):
        kw: dict[str, Any] = {"wait": wait, "max_wait": max_wait}
        if service in rates:
            rate, _, burst = rates[service].partition(":")
            kw["rate"] = number("MESH_RATE_LIMIT", rate.removesuffix("/s"))
            if burst:
                kw["burst"] = number("MESH_RATE_LIMIT", burst)
        if service in inflight:
            kw["max_in_flight"] = integer("MESH_MAX_IN_FLIGHT", inflight[service])
        try:
            limits[service] = LimitPolicy(**kw)
        except ValueError as exc:
            raise ConfigError(f"limits for {service}: {exc}") from None
    return limits
