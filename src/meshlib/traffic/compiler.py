"""Config entries compiled into a discovery chain, in the JSON shape of ``/v1/discovery-chain``.

Consul compiles a service's ``service-router``, ``service-splitter`` and ``service-resolver``
entries into one graph (``CompiledDiscoveryChain``: ``StartNode``, ``Nodes`` keyed
``router:``/``splitter:``/``resolver:``, and ``Targets`` keyed
``[subset.]service.namespace.partition.datacenter``), and proxies follow the graph rather than
the entries. FakeConsul serves what this module compiles, and static discovery compiles its
file's entries with it too, so meshlib reads one shape from both. The rules are Consul's
(``agent/consul/discoverychain/compile.go``): a router gets a catch-all default route (``/``
to the service itself); a reference to a service without a subset takes the resolver's
``DefaultSubset``; a ``Redirect`` replaces the reference; nested splitters are flattened into
one split with multiplied weights; failover names targets (by ``Targets``, ``Datacenters``,
or ``Service``/``ServiceSubset``); the connect timeout defaults to 5 s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CompileError", "EntryLookup", "compile_chain", "target_id"]

EntryLookup = Callable[[str, str], Mapping[str, Any] | None]
"""``(kind, name)`` → the stored entry, or None."""

_NS = "default"
_MAX_DEPTH = 8


class CompileError(ValueError):
    """Entries that reference each other in a way Consul refuses to compile."""


def target_id(service: str, subset: str | None, dc: str) -> str:
    """Consul's target ID: ``[subset.]service.namespace.partition.datacenter``."""
    head = f"{subset}.{service}" if subset else service
    return f"{head}.{_NS}.{_NS}.{dc}"


class _Compiler:
    def __init__(self, name: str, dc: str, lookup: EntryLookup, trust_domain: str) -> None:
        self.name = name
        self.dc = dc
        self.lookup = lookup
        self.trust_domain = trust_domain
        self.nodes: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.used_entries = False
        self.l7 = False

    def entry(self, kind: str, name: str) -> Mapping[str, Any] | None:
        found = self.lookup(kind, name)
        if found is not None:
            self.used_entries = True
        return found

    def target(self, service: str, subset: str | None, dc: str) -> str:
        tid = target_id(service, subset, dc)
        if tid in self.targets:
            return tid
        resolver = self.entry("service-resolver", service) or {}
        subsets = resolver.get("Subsets") or {}
        spec: Mapping[str, Any] = {}
        if subset:
            if subset not in subsets:
                raise CompileError(f'service "{service}" does not have a subset named "{subset}"')
            spec = subsets[subset] or {}
        sni_head = f"{subset}.{service}" if subset else service
        sni = f"{sni_head}.{_NS}.{dc}.internal.{self.trust_domain}"
        self.targets[tid] = {
            "ID": tid,
            "Service": service,
            "ServiceSubset": subset or "",
            "Namespace": _NS,
            "Partition": _NS,
            "Datacenter": dc,
            "MeshGateway": {},
            "Subset": {
                "Filter": spec.get("Filter", ""),
                "OnlyPassing": bool(spec.get("OnlyPassing", False)),
            },
            "ConnectTimeout": resolver.get("ConnectTimeout") or "5s",
            "External": False,
            "SNI": sni,
            "Name": sni,
        }
        return tid

    def resolver(self, service: str, subset: str | None, dc: str, depth: int = 0) -> str:
        """The resolver node for a reference, after redirects and the default subset."""
        if depth > _MAX_DEPTH:
            raise CompileError(f"too many redirects resolving {service!r}")
        entry = self.entry("service-resolver", service)
        redirect = entry.get("Redirect") if entry is not None else None
        if redirect:
            to = redirect.get("Service") or service
            return self.resolver(
                to,
                redirect.get("ServiceSubset") or None,
                redirect.get("Datacenter") or dc,
                depth + 1,
            )
        if not subset and entry is not None:
            subset = entry.get("DefaultSubset") or None
        tid = self.target(service, subset, dc)
        node_id = "resolver:" + tid
        if node_id in self.nodes:
            return node_id
        body: dict[str, Any] = {
            "Default": entry is None,
            "ConnectTimeout": (entry or {}).get("ConnectTimeout") or "5s",
            "Target": tid,
        }
        if entry is not None and entry.get("RequestTimeout"):
            body["RequestTimeout"] = entry["RequestTimeout"]
        failover = self.failover(entry or {}, service, subset, dc)
        if failover is not None:
            body["Failover"] = failover
        node: dict[str, Any] = {"Type": "resolver", "Name": tid, "Resolver": body}
        if entry is not None and entry.get("LoadBalancer"):
            node["LoadBalancer"] = entry["LoadBalancer"]
        self.nodes[node_id] = node
        return node_id

    def failover(
        self, entry: Mapping[str, Any], service: str, subset: str | None, dc: str
    ) -> dict[str, Any] | None:
        table = entry.get("Failover") or {}
        spec = table.get(subset or "*") or table.get("*")
        if not spec:
            return None
        ids: list[str] = []
        for t in spec.get("Targets") or []:
            ids.append(
                self.target(
                    t.get("Service") or service,
                    t.get("ServiceSubset") or None,
                    t.get("Datacenter") or dc,
                )
            )
        if not ids:
            to_service = spec.get("Service") or service
            to_subset = spec.get("ServiceSubset") or None
            if spec.get("Service") and not to_subset:
                other = self.entry("service-resolver", to_service) or {}
                to_subset = other.get("DefaultSubset") or None
            for to_dc in spec.get("Datacenters") or [dc]:
                ids.append(self.target(to_service, to_subset, to_dc))
        out: dict[str, Any] = {"Targets": ids}
        if spec.get("Policy"):
            out["Policy"] = spec["Policy"]
        return out

    def splits(self, service: str, weight: float, depth: int) -> list[dict[str, Any]]:
        entry = self.entry("service-splitter", service)
        assert entry is not None
        out: list[dict[str, Any]] = []
        for split in entry.get("Splits") or []:
            share = weight * float(split.get("Weight", 0)) / 100.0
            to = split.get("Service") or service
            subset = split.get("ServiceSubset") or None
            nested = to != service and not subset and self.entry("service-splitter", to)
            if nested and depth < _MAX_DEPTH:
                out.extend(self.splits(to, share, depth + 1))
                continue
            definition = {k: v for k, v in split.items() if k != "Weight"}
            out.append(
                {
                    "Weight": round(share, 4),
                    "NextNode": self.resolver(to, subset, self.dc),
                    "Definition": definition,
                }
            )
        return out

    def next_node(self, service: str, subset: str | None) -> str:
        """A splitter if the service has one (and no subset is named), else its resolver."""
        if not subset and self.entry("service-splitter", service) is not None:
            node_id = f"splitter:{service}.{_NS}.{_NS}"
            if node_id not in self.nodes:
                self.l7 = True
                self.nodes[node_id] = {"Type": "splitter", "Name": node_id[9:], "Splits": []}
                self.nodes[node_id]["Splits"] = self.splits(service, 100.0, 0)
            return node_id
        return self.resolver(service, subset, self.dc)

    def compile(self) -> dict[str, Any]:
        router = self.entry("service-router", self.name)
        if router is not None:
            self.l7 = True
            routes = []
            for route in [*(router.get("Routes") or []), _default_route(self.name)]:
                dest = route.get("Destination") or {}
                nxt = self.next_node(dest.get("Service") or self.name, dest.get("ServiceSubset"))
                routes.append({"Definition": route, "NextNode": nxt})
            start = f"router:{self.name}.{_NS}.{_NS}"
            self.nodes[start] = {"Type": "router", "Name": start[7:], "Routes": routes}
        else:
            start = self.next_node(self.name, None)
        return {
            "ServiceName": self.name,
            "Namespace": _NS,
            "Partition": _NS,
            "Datacenter": self.dc,
            "CustomizationHash": "",
            "Default": not self.used_entries,
            "Protocol": "http" if self.l7 else "tcp",
            "ServiceMeta": {},
            "StartNode": start,
            "Nodes": self.nodes,
            "Targets": self.targets,
        }


def _default_route(service: str) -> dict[str, Any]:
    return {"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": {"Service": service}}


def compile_chain(
    name: str, *, datacenter: str, lookup: EntryLookup, trust_domain: str = "consul"
) -> dict[str, Any]:
    """The compiled chain for ``name`` (the value of the answer's ``Chain`` key)."""
    return _Compiler(name, datacenter, lookup, trust_domain).compile()
