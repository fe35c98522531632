"""The inbound admission policy from ``MESH_INBOUND_*`` variables, read from a mapping handed in.

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

__all__ = ["admission_from_env"]

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
