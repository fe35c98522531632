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
from types import MappingProxyType

__all__ = [
    "EMPTY_META",
    "Endpoint",
    "inet_aton_value",
    "is_ip_literal",
    "parse_endpoint",
    "validate_host",
]

EMPTY_META: Mapping[str, str] = MappingProxyType({})
"""Shared by every endpoint without node metadata (no dict per endpoint)."""
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def inet_aton_value(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the C library's ``inet_aton`` (and so ``getaddrinfo``) reads ``text``
    as, or None: one to four parts, each decimal, octal (leading ``0``) or hex (``0x``), the
    last filling the remaining bytes, so ``2852039166``, ``0xa9fea9fe``,
    ``0251.0376.0251.0376`` and ``169.254.43518`` all mean 169.254.169.254.

    A pure function, so a hostile spelling can be judged without resolving or dialling it."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        lower = part.lower()
        try:
            if lower.startswith("0x"):
                values.append(int(lower[2:] or "0", 16) if _HEX.fullmatch(lower[2:]) else -1)
            elif len(lower) > 1 and lower.startswith("0"):
                values.append(int(lower, 8) if _OCT.fullmatch(lower) else -1)
            else:
                values.append(int(lower) if _DEC.fullmatch(lower) else -1)
        except ValueError:
            return None
        if values[-1] < 0:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, v in enumerate(head):
        number += v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


_HEX = re.compile(r"[0-9a-f]*", re.ASCII)
_OCT = re.compile(r"[0-7]+", re.ASCII)
_DEC = re.compile(r"[0-9]+", re.ASCII)


def validate_host(host: str) -> str:
    """Return ``host`` (brackets stripped from IPv6) or raise ``ValueError`` saying why.

    Numeric hosts must be canonical, as Envoy's address parser (``inet_pton``) requires: a
    dotted quad or an IPv6 literal. Other spellings the C resolver accepts (``2852039166``,
    ``0x7f.1``, ``010.0.0.1``) are refused with the address they stand for, and so is any
    name whose last label is all digits (RFC 1123 2.1: no host name looks numeric), so no
    filter that reads the address as text can be walked around."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if is_ip_literal(bare):
        return bare
    if len(bare) > 253 or not bare:
        raise ValueError(f"host {host!r} is not an IP address or an RFC 1123 hostname")
    labels = bare.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"host {host!r} is not an IP address or an RFC 1123 hostname")
    meant = inet_aton_value(bare.rstrip("."))
    if meant is not None:
        raise ValueError(
            f"host {host!r} is a non-canonical spelling of the IPv4 address {meant}; "
            "write numeric addresses as a dotted quad (a.b.c.d, decimal, no leading zeros)"
        )
    if labels[-1].isascii() and labels[-1].isdigit():
        raise ValueError(
            f"host {host!r} is neither a dotted-quad IPv4 address nor a host name "
            "(a host name's last label is never all digits)"
        )
    return bare


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One instance of a service: where to connect and how much traffic it should take."""

    host: str
    port: int
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    """The service instance's metadata (Consul's ``Service.Meta``). It takes part in equality
    (not in the hash), so a metadata change is an update: subsets and zones read it."""
    node_meta: Mapping[str, str] = field(default_factory=lambda: EMPTY_META, hash=False)
    """The node's metadata (Consul's ``Node.Meta``), for subset filters and zones."""

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
