"""Rendering stored records as the exact JSON shapes Consul's endpoints return.

One function per wire shape (health entry, catalog ``ServiceNode``, ``AgentService``,
``HealthCheck``, ``DirEntry``), so every endpoint that shows the same struct shows it the same
way. Field order follows Go's struct order and map keys are sorted, as ``encoding/json`` does;
the samples in ``tests/data/consul-api`` are the reference.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from meshlib.traffic.durations import format_go_duration

from .model import CheckRec, KVEntry, NodeRec, ServiceRec

__all__ = [
    "agent_content_hash",
    "render_agent_service",
    "render_api_check",
    "render_catalog_service",
    "render_check",
    "render_health_entry",
    "render_kv",
    "render_node",
    "render_node_service",
    "sorted_map",
]

_PROXY_KEYS = {
    k.lower(): k
    for k in (
        "DestinationServiceName",
        "DestinationServiceID",
        "LocalServiceAddress",
        "LocalServicePort",
        "LocalServiceSocketPath",
        "Mode",
        "TransparentProxy",
        "Config",
        "Upstreams",
        "MeshGateway",
        "Expose",
    )
}


def sorted_map(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with sorted keys, because Go marshals map keys in sorted order."""
    return {k: data[k] for k in sorted(data)}


def render_node(node: NodeRec) -> dict[str, Any]:
    """``structs.Node`` as in ``/v1/catalog/nodes`` and the ``Node`` of a health entry."""
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": sorted_map(node.tagged_addresses),
        "Meta": sorted_map(node.meta),
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def _tagged(svc: ServiceRec) -> dict[str, Any]:
    return {
        k: {"Address": svc.tagged_addresses[k][0], "Port": svc.tagged_addresses[k][1]}
        for k in sorted(svc.tagged_addresses)
    }


def _proxy(svc: ServiceRec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "DestinationServiceName": "",
        "DestinationServiceID": "",
        "LocalServiceAddress": "",
        "LocalServicePort": 0,
        "Config": None,
        "Upstreams": None,
    }
    for key, value in (svc.proxy or {}).items():
        out[_PROXY_KEYS.get(key.replace("_", "").lower(), key)] = value
    return out


def _connect(svc: ServiceRec) -> dict[str, Any]:
    native = False
    for key, value in (svc.connect or {}).items():
        if key.lower() == "native":
            native = bool(value)
    return {"Native": native, "Proxy": None}


def render_node_service(svc: ServiceRec) -> dict[str, Any]:
    """``structs.NodeService``: the ``Service`` of a health entry and of ``catalog/node``."""
    out: dict[str, Any] = {}
    if svc.kind:
        out["Kind"] = svc.kind
    out.update(ID=svc.id, Service=svc.name, Tags=list(svc.tags), Address=svc.address)
    if svc.tagged_addresses:
        out["TaggedAddresses"] = _tagged(svc)
    out.update(Meta=sorted_map(svc.meta), Port=svc.port)
    if svc.socket_path:
        out["SocketPath"] = svc.socket_path
    out.update(
        Weights={"Passing": svc.weights[0], "Warning": svc.weights[1]},
        EnableTagOverride=svc.enable_tag_override,
        Proxy=_proxy(svc),
        Connect=_connect(svc),
    )
    if svc.locality:
        out["Locality"] = svc.locality
    out.update(CreateIndex=svc.create_index, ModifyIndex=svc.modify_index)
    return out


def render_agent_service(
    svc: ServiceRec, datacenter: str, *, content_hash: str | None = None
) -> dict[str, Any]:
    """``api.AgentService`` as built by the agent's ``buildAgentService`` (omitempty fields)."""
    out: dict[str, Any] = {}
    if svc.kind:
        out["Kind"] = svc.kind
    out.update(
        ID=svc.id,
        Service=svc.name,
        Tags=list(svc.tags),
        Meta=sorted_map(svc.meta),
        Port=svc.port,
        Address=svc.address,
    )
    if svc.socket_path:
        out["SocketPath"] = svc.socket_path
    if svc.tagged_addresses:
        out["TaggedAddresses"] = _tagged(svc)
    out["Weights"] = {"Passing": svc.weights[0], "Warning": svc.weights[1]}
    out["EnableTagOverride"] = svc.enable_tag_override
    if content_hash is not None:
        out["ContentHash"] = content_hash
    if svc.kind:
        out["Proxy"] = _proxy(svc)
    if svc.connect:
        out["Connect"] = _connect(svc)
    if svc.locality:
        out["Locality"] = svc.locality
    out["Datacenter"] = datacenter
    return out


def agent_content_hash(svc: ServiceRec, datacenter: str) -> str:
    """A stable hash of the service definition, for ``X-Consul-ContentHash`` blocking."""
    canonical = json.dumps(render_agent_service(svc, datacenter), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _definition(check: CheckRec | None) -> dict[str, Any]:
    d = check.definition if check is not None else None

    def dur(value: float | None) -> str:
        return format_go_duration(value or 0.0)

    return {
        "Interval": dur(d.interval if d else None),
        "Timeout": dur(d.timeout if d else None),
        "DeregisterCriticalServiceAfter": dur(d.deregister_after if d else None),
        "HTTP": d.http if d else "",
        "Header": d.header if d else None,
        "Method": d.method if d else "",
        "Body": d.body if d else "",
        "TLSServerName": d.tls_server_name if d else "",
        "TLSSkipVerify": d.tls_skip_verify if d else False,
        "TCP": d.tcp if d else "",
    }


def render_check(
    check: CheckRec, service_tags: list[str], *, agent_local: bool = False
) -> dict[str, Any]:
    """``structs.HealthCheck``; agent-local views carry zero Raft indexes, as the agent does."""
    d = check.definition
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(service_tags),
        "Type": check.type,
        "Interval": format_go_duration(d.interval) if d and d.interval else "",
        "Timeout": format_go_duration(d.timeout) if d and d.timeout else "",
        "ExposedPort": 0,
        "Definition": _definition(check),
        "CreateIndex": 0 if agent_local else check.create_index,
        "ModifyIndex": 0 if agent_local else check.modify_index,
    }


def render_api_check(check: CheckRec, service_tags: list[str]) -> dict[str, Any]:
    """``api.HealthCheck`` as the agent-health endpoints fill it: identity and status only.

    ``agentHealthService`` copies just the name, status and service fields, so ``Type`` is
    empty and ``Definition`` holds zero values whatever the check really is (see the
    agent-health-service-name sample).
    """
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(service_tags),
        "Type": "",
        "ExposedPort": 0,
        "Definition": _definition(None),
        "CreateIndex": 0,
        "ModifyIndex": 0,
    }


def render_health_entry(
    node: NodeRec, svc: ServiceRec, checks: list[tuple[CheckRec, list[str]]]
) -> dict[str, Any]:
    """One ``/v1/health/service/:name`` entry: node, instance, and node plus instance checks."""
    return {
        "Node": render_node(node),
        "Service": render_node_service(svc),
        "Checks": [render_check(c, tags) for c, tags in checks],
    }


def render_catalog_service(svc: ServiceRec, node: NodeRec) -> dict[str, Any]:
    """``structs.ServiceNode``: the flattened node-plus-service shape of ``catalog/service``."""
    out: dict[str, Any] = {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": sorted_map(node.tagged_addresses),
        "NodeMeta": sorted_map(node.meta),
        "ServiceKind": svc.kind,
        "ServiceID": svc.id,
        "ServiceName": svc.name,
        "ServiceTags": list(svc.tags),
        "ServiceAddress": svc.address,
    }
    if svc.tagged_addresses:
        out["ServiceTaggedAddresses"] = _tagged(svc)
    out.update(
        ServiceWeights={"Passing": svc.weights[0], "Warning": svc.weights[1]},
        ServiceMeta=sorted_map(svc.meta),
        ServicePort=svc.port,
        ServiceSocketPath=svc.socket_path,
        ServiceEnableTagOverride=svc.enable_tag_override,
        ServiceProxy=_proxy(svc),
        ServiceConnect=_connect(svc),
        CreateIndex=svc.create_index,
        ModifyIndex=svc.modify_index,
    )
    return out


def render_kv(entry: KVEntry) -> dict[str, Any]:
    """``structs.DirEntry``: base64 ``Value`` (null when empty); ``Session`` omitted when unset."""
    value = base64.b64encode(entry.value).decode("ascii") if entry.value else None
    return {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": value,
        **({"Session": entry.session} if entry.session else {}),
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }
