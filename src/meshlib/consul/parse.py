"""Registry data is input: turn Consul health entries into validated endpoints.

Every field of a ``/v1/health/service`` answer is checked before it can reach a socket: the
address (``Service.Address``, or ``Node.Address`` when empty) must be an IP literal or an RFC
1123 host name and not link-local (169.254.0.0/16, fe80::/10: cloud metadata lives there) unless
allowed; the port must be 1-65535; weights follow Consul's rules (``Passing`` <= 0 means 1; a
``Warning`` weight of 0 drops warning instances). A malformed entry is skipped and reported, the
rest are kept; a body that is not a list of entries at all is an error, so it never empties a
good endpoint set.

Aggregated status follows Consul's own (api ``HealthChecks.AggregatedStatus``): any maintenance
check → maintenance, else any critical → critical, else any warning → warning, else passing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.endpoint import EMPTY_META, Endpoint, validate_host

__all__ = [
    "FOREIGN_LIMIT",
    "ParsedEntries",
    "address_refusal",
    "aggregated_status",
    "foreign",
    "parse_health_entries",
    "valid_service_name",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")

FOREIGN_LIMIT = 300
"""Most characters of one string from the registry that reach a log, an exception or state."""
_MAX_REASONS = 10


def foreign(value: object, limit: int = FOREIGN_LIMIT) -> str:
    """A string from the registry made safe to log: control and other non-printable characters
    escaped (a newline cannot forge a log line) and cut to ``limit`` characters, saying how
    much was cut (a 50 MB error body becomes one short line)."""
    text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    size = 0
    for i, ch in enumerate(text):
        piece = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        if size + len(piece) > limit:
            return "".join(out) + f"...[{len(text) - i} more characters]"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def valid_service_name(name: str) -> bool:
    """Consul's DNS-safe service-name rule; ``../kv/x`` and friends never reach Consul."""
    return bool(_NAME.match(name))


def aggregated_status(checks: Any) -> str:
    """``passing``, ``warning``, ``critical`` or ``maintenance`` for an entry's checks."""
    if not isinstance(checks, list):
        return "passing"
    statuses = set()
    for check in checks:
        if not isinstance(check, Mapping):
            continue
        check_id = str(check.get("CheckID", ""))
        if check_id == "_node_maintenance" or check_id.startswith("_service_maintenance:"):
            return "maintenance"
        statuses.add(str(check.get("Status", "")))
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


@dataclass(frozen=True, slots=True)
class ParsedEntries:
    endpoints: tuple[Endpoint, ...]
    rejected: tuple[str, ...]
    """Why entries were skipped, one line each for the first few (for a warning log; capped
    and escaped, never includes secrets)."""
    rejected_count: int = 0
    """How many entries were skipped as invalid (``rejected`` shows only the first few)."""


def _weight(service: Mapping[str, Any], status: str) -> float:
    weights = service.get("Weights")
    if not isinstance(weights, Mapping):
        return 1.0
    key = "Passing" if status == "passing" else "Warning"
    value = weights.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    if status == "passing" and value <= 0:
        return 1.0
    return float(value)


def address_refusal(host: str, *, allow_link_local: bool = False) -> str | None:
    """Why a registry address must not be dialled, or None; never resolves or connects.

    The host is judged as the socket layer will read it: non-canonical numeric spellings are
    refused (``validate_host``), and an IPv4-mapped IPv6 address (``::ffff:169.254.169.254``,
    ``::ffff:a9fe:a9fe``) is judged as the IPv4 address it reaches."""
    try:
        _address_ok(validate_host(host), allow_link_local)
    except ValueError as exc:
        return str(exc)
    return None


def _address_ok(host: str, allow_link_local: bool) -> None:
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = parsed
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        ip = parsed.ipv4_mapped
    if ip.is_unspecified:
        raise ValueError(f"address {host} is unspecified")
    if ip.is_link_local and not allow_link_local:
        raise ValueError(
            f"address {host} is link-local{'' if ip == parsed else f' ({ip})'} "
            "(metadata services live there); "
            "set MESH_CONSUL_ALLOW_LINK_LOCAL=true to allow it"
        )


def _clean(meta: Mapping[Any, Any]) -> dict[str, str]:
    """String values only, and none that could forge a header or a log line."""
    return {
        str(k): v for k, v in meta.items() if isinstance(v, str) and "\r" not in v and "\n" not in v
    }


def parse_health_entries(
    data: Any, *, include_warning: bool = False, allow_link_local: bool = False
) -> ParsedEntries:
    """Endpoints from a ``/v1/health/service`` body; raises ``ValueError`` if it is not one."""
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of health entries, got {type(data).__name__}")
    endpoints: list[Endpoint] = []
    rejected: list[str] = []
    rejected_count = 0
    for i, entry in enumerate(data):
        try:
            if not isinstance(entry, Mapping):
                raise ValueError("entry is not an object")
            service, node = entry.get("Service"), entry.get("Node")
            if not isinstance(service, Mapping) or not isinstance(node, Mapping):
                raise ValueError("entry lacks Service or Node")
            status = aggregated_status(entry.get("Checks"))
            if status in ("critical", "maintenance") or (
                status == "warning" and not include_warning
            ):
                continue
            weight = _weight(service, status)
            if weight <= 0:
                continue
            address = service.get("Address") or node.get("Address")
            if not isinstance(address, str) or not address:
                raise ValueError("no address")
            host = validate_host(address)
            _address_ok(host, allow_link_local)
            port = service.get("Port")
            if isinstance(port, bool) or not isinstance(port, int):
                raise ValueError(f"port {port!r} is not an integer")
            tags = service.get("Tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ValueError("tags are not a list of strings")
            meta = service.get("Meta") or {}
            if not isinstance(meta, Mapping):
                raise ValueError("meta is not an object")
            node_meta = node.get("Meta") or {}
            if not isinstance(node_meta, Mapping):
                raise ValueError("node meta is not an object")
            endpoints.append(
                Endpoint(
                    host=host,
                    port=port,
                    weight=weight,
                    tags=tuple(tags),
                    meta=_clean(meta),
                    node_meta=_clean(node_meta) if node_meta else EMPTY_META,
                )
            )
        except ValueError as exc:
            rejected_count += 1
            if len(rejected) < _MAX_REASONS:
                svc = entry.get("Service") if isinstance(entry, Mapping) else None
                sid = svc.get("ID") if isinstance(svc, Mapping) else None
                rejected.append(f"entry {i} ({foreign(repr(sid), 80)}): {foreign(exc)}")
    unique = tuple(dict.fromkeys(endpoints))
    return ParsedEntries(unique, tuple(rejected), rejected_count)
