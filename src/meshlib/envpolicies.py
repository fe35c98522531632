"""Per-service policies from the environment: outbound limits (rate, in-flight, adaptive), hedges.

``meshlib.config`` reads ``os.environ`` and hands the mapping here; each value goes through the
parsers of ``envparse``, so a bad one fails at start with a ``ConfigError`` that names the
variable, the service and what is accepted. The variables are in docs/configuration.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlib.envparse import build as _build
from meshlib.envparse import parse_bool, parse_duration
from meshlib.envparse import parse_int as _int
from meshlib.envparse import parse_number as _number
from meshlib.envparse import per_service as _per_service
from meshlib.envparse import shown as _shown
from meshlib.errors import ConfigError
from meshlib.limit.adaptive import AdaptivePolicy
from meshlib.limit.limits import LimitPolicy
from meshlib.retry.hedge import HedgePolicy, parse_hedge

__all__ = ["hedges_from_env", "limits_from_env"]


def limits_from_env(env: Mapping[str, str]) -> dict[str, LimitPolicy]:
    """``MESH_RATE_LIMIT``, ``MESH_MAX_IN_FLIGHT``, ``MESH_ADAPTIVE_CONCURRENCY`` and the wait."""
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
    adaptive = _per_service("MESH_ADAPTIVE_CONCURRENCY", env.get("MESH_ADAPTIVE_CONCURRENCY", ""))
    limits: dict[str, LimitPolicy] = {}
    for service in sorted(set(rates) | set(inflight) | set(adaptive)):
        kw: dict[str, Any] = {"wait": wait, "max_wait": max_wait}
        if service in adaptive:
            kw["adaptive"] = _adaptive(service, adaptive[service])
        if service in rates:
            rate, _, burst = rates[service].partition(":")
            kw["rate"] = _number("MESH_RATE_LIMIT", rate.removesuffix("/s"))
            if burst:
                kw["burst"] = _number("MESH_RATE_LIMIT", burst)
        if service in inflight:
            kw["max_in_flight"] = _int("MESH_MAX_IN_FLIGHT", inflight[service])
        limits[service] = _build(f"limits for {service}", LimitPolicy, kw)
    return limits


def _adaptive(service: str, value: str) -> AdaptivePolicy | None:
    """``on``, ``off`` or ``min:max`` bounds of the adaptive limit (it starts at 20, clamped)."""
    name = f"MESH_ADAPTIVE_CONCURRENCY for {service}"
    v = value.strip().lower()
    if v in ("on", "true", "yes", "1"):
        return AdaptivePolicy()
    if v in ("off", "false", "no", "0"):
        return None
    low, sep, high = v.partition(":")
    if not sep:
        raise ConfigError(
            f"{name}={_shown(name, value)} is not accepted; use on, off or min:max "
            "(e.g. users=on;orders=5:200)"
        )
    lo, hi = _int(name, low), _int(name, high)
    initial = min(max(AdaptivePolicy().initial, lo), hi)
    policy: AdaptivePolicy = _build(
        name, AdaptivePolicy, {"min_limit": lo, "max_limit": hi, "initial": initial}
    )
    return policy


def hedges_from_env(env: Mapping[str, str]) -> dict[str, HedgePolicy]:
    """``MESH_HEDGE=users=p99;orders=40ms`` with the floor ``MESH_HEDGE_MIN_DELAY``."""
    floor = (
        parse_duration("MESH_HEDGE_MIN_DELAY", env["MESH_HEDGE_MIN_DELAY"])
        if "MESH_HEDGE_MIN_DELAY" in env
        else None
    )
    hedges: dict[str, HedgePolicy] = {}
    for service, setting in _per_service("MESH_HEDGE", env.get("MESH_HEDGE", "")).items():
        try:
            policy = parse_hedge(setting, what=f"MESH_HEDGE for {service}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if policy is None:
            continue
        if floor is not None:
            policy = _build(
                "MESH_HEDGE_MIN_DELAY",
                HedgePolicy,
                {"delay": policy.delay, "quantile": policy.quantile, "min_delay": floor},
            )
        hedges[service] = policy
    return hedges
