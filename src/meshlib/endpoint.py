"""What an endpoint is: a validated ``host:port`` with a weight, parsed the same way everywhere.

Endpoints arrive from environment variables, files and a registry, all of which are input. One
parser and one validator keep them honest: the host must be an IP literal or an RFC 1123 name,
the port 1-65535, the weight a positive finite number. A bad entry raises ``ValueError`` naming
the entry, so discovery can refuse it without losing the rest.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Endpoint", "is_ip_literal", "parse_endpoint", "validate_host"]

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def validate_host(host: str) -> str:
    """Return ``host`` (brackets stripped from IPv6) or raise ``ValueError`` saying why."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if is_ip_literal(bare):
        return bare
    if len(bare) > 253 or not bare:
        raise ValueError(f"host {host!r} is not an IP address or an RFC 1123 hostname")
    labels = bare.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"host {host!r} is not an IP address or an RFC 1123 hostname")
    return bare


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One instance of a service: where to connect and how much traffic it should take."""

    host: str
    port: int
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", validate_host(self.host))
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"endpoint port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"endpoint port must be within [1, 65535], got {self.port}")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight)):
            raise ValueError(f"endpoint weight must be a finite number, got {self.weight!r}")
        if self.weight <= 0:
            raise ValueError(f"endpoint weight must be > 0, got {self.weight}")

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 hosts in brackets: the key that identifies the endpoint."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address


def parse_endpoint(text: str, *, weight: float = 1.0) -> Endpoint:
    """Parse ``host:port`` or ``[v6]:port`` into an ``Endpoint``; the port is required."""
    raw = text.strip()
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"endpoint {text!r} must look like [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise ValueError(f"endpoint {text!r} must look like host:port, e.g. 127.0.0.1:8001")
        if ":" in host:
            raise ValueError(f"endpoint {text!r}: write IPv6 addresses as [addr]:port")
    if not port_text.isdigit():
        raise ValueError(f"endpoint {text!r} has a port that is not a number")
    return Endpoint(host=host, port=int(port_text), weight=weight)
