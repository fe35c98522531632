"""Building stored records from definitions, and deciding when a write changes nothing.

A real agent only writes to the catalog when a registration differs from what it holds, so an
idempotent re-registration (services commonly re-register every few seconds) allocates no index
and wakes no watcher. These comparisons define "differs"; the builders apply the agent's
defaults, such as the ``lan_ipv4``/``wan_ipv4`` tagged addresses it adds for IP literals.
"""

from __future__ import annotations

import ipaddress

from .model import CheckRec, NodeRec, ServiceDef, ServiceRec

__all__ = [
    "default_tagged_addresses",
    "same_check",
    "same_node",
    "same_service",
    "service_rec",
]


def same_service(a: ServiceRec, b: ServiceRec) -> bool:
    def key(s: ServiceRec) -> tuple[object, ...]:
        return (
            s.name,
            s.tags,
            s.address,
            s.port,
            s.meta,
            s.weights,
            s.tagged_addresses,
            s.enable_tag_override,
            s.kind,
            s.proxy,
            s.connect,
            s.socket_path,
            s.locality,
        )

    return key(a) == key(b)


def same_check(a: CheckRec, b: CheckRec) -> bool:
    def key(c: CheckRec) -> tuple[object, ...]:
        return (c.name, c.status, c.notes, c.output, c.service_id, c.service_name, c.type)

    return key(a) == key(b) and a.definition == b.definition


def same_node(a: NodeRec, b: NodeRec) -> bool:
    return (a.node_id, a.address, a.tagged_addresses, a.meta) == (
        b.node_id,
        b.address,
        b.tagged_addresses,
        b.meta,
    )


def default_tagged_addresses(defn: ServiceDef) -> dict[str, tuple[str, int]]:
    """The agent adds ``lan_ipv4``/``wan_ipv4`` (or ``_ipv6``) for an IP-literal address."""
    tagged = dict(defn.tagged_addresses)
    try:
        ip = ipaddress.ip_address(defn.address)
    except ValueError:
        return tagged
    suffix = "ipv4" if ip.version == 4 else "ipv6"
    tagged.setdefault(f"lan_{suffix}", (defn.address, defn.port))
    tagged.setdefault(f"wan_{suffix}", (defn.address, defn.port))
    return tagged


def service_rec(node: str, defn: ServiceDef, tagged: dict[str, tuple[str, int]]) -> ServiceRec:
    return ServiceRec(
        node=node,
        id=defn.id,
        name=defn.name,
        tags=list(defn.tags),
        address=defn.address,
        port=defn.port,
        meta=dict(defn.meta),
        weights=defn.weights,
        tagged_addresses=tagged,
        enable_tag_override=defn.enable_tag_override,
        kind=defn.kind,
        proxy=defn.proxy,
        connect=defn.connect,
        socket_path=defn.socket_path,
        locality=defn.locality,
    )
