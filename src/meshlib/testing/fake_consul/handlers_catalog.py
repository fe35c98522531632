"""The ``/v1/catalog/*`` endpoints: services, service instances, nodes, register and deregister.

Reads return Consul's catalog shapes (``ServiceNode`` flattened node-plus-service entries, the
service-name-to-tags map that always includes ``consul``) with the catalog's indexes: one
service's index for ``/catalog/service/:name``, the services table for ``/catalog/services``, the
nodes table for ``/catalog/nodes``. Writes are the low-level register/deregister that tests use to
put services on nodes other than the agent's.
"""

from __future__ import annotations

from typing import Any

from .decode import DecodeError, Fields, decode_check_def, decode_service_def
from .endpoint import (
    Context,
    Endpoint,
    Handler,
    Route,
    TopicsFn,
    body_fields,
    check_datacenter,
    node_meta_matches,
    parse_node_meta,
    request_filter,
    require_tail,
    topics,
)
from .handlers_health import has_all_tags, is_connect_for
from .model import CheckDef, ServiceRec
from .registry import CatalogRegistration
from .render import render_catalog_service, render_node, render_node_service
from .schemas import CATALOG_SERVICE, NODE, NODE_SERVICE
from .state import TOPIC_CHECKS, TOPIC_NODES, TOPIC_SERVICES, StateError, service_topic
from .wire import HTTPError, Request, Result

__all__ = ["ROUTES"]


def _services(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    st = ctx.state
    wanted = parse_node_meta(req)
    predicate = request_filter(req, CATALOG_SERVICE)
    grouped: dict[str, list[str]] = {}
    for svc in st.all_instances():
        node = st.nodes[svc.node]
        if wanted and not node_meta_matches(node.meta, wanted):
            continue
        if predicate is not None and not predicate(render_catalog_service(svc, node)):
            continue
        tags = grouped.setdefault(svc.name, [])
        tags.extend(t for t in svc.tags if t not in tags)
    return Result({k: grouped[k] for k in sorted(grouped)}, st.table_index(TOPIC_SERVICES))


def _service_nodes(req: Request, ctx: Context, instances: list[ServiceRec]) -> list[dict[str, Any]]:
    st = ctx.state
    tags = req.params("tag")
    wanted = parse_node_meta(req)
    predicate = request_filter(req, CATALOG_SERVICE)
    out: list[dict[str, Any]] = []
    for svc in instances:
        node = st.nodes[svc.node]
        if tags and not has_all_tags(svc, tags):
            continue
        if wanted and not node_meta_matches(node.meta, wanted):
            continue
        entry = render_catalog_service(svc, node)
        if predicate is None or predicate(entry):
            out.append(entry)
    return out


def _service(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "service name")
    index = ctx.state.service_index(name)
    if req.param("peer"):
        return Result([], index)
    return Result(_service_nodes(req, ctx, ctx.state.instances(name)), index)


def _connect(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "service name")
    st = ctx.state
    instances = [s for s in st.all_instances() if is_connect_for(s, name)]
    return Result(_service_nodes(req, ctx, instances), st.table_index(TOPIC_SERVICES))


def _nodes(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    st = ctx.state
    wanted = parse_node_meta(req)
    predicate = request_filter(req, NODE)
    out: list[dict[str, Any]] = []
    for name in sorted(st.nodes):
        node = st.nodes[name]
        if wanted and not node_meta_matches(node.meta, wanted):
            continue
        rendered = render_node(node)
        if predicate is None or predicate(rendered):
            out.append(rendered)
    return Result(out, st.table_index(TOPIC_NODES))


def _node_services(req: Request, ctx: Context) -> list[dict[str, Any]] | None:
    st = ctx.state
    name = require_tail(req, "node name")
    if name not in st.nodes:
        return None
    predicate = request_filter(req, NODE_SERVICE)
    rendered = [render_node_service(s) for s in st.node_services(name)]
    return [r for r in rendered if predicate is None or predicate(r)]


def _node(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    st = ctx.state
    services = _node_services(req, ctx)
    index = st.table_index(TOPIC_NODES, TOPIC_SERVICES)
    if services is None:
        return Result(None, index)
    node = render_node(st.nodes[req.tail])
    return Result({"Node": node, "Services": {s["ID"]: s for s in services}}, index)


def _node_services_list(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    st = ctx.state
    services = _node_services(req, ctx)
    index = st.table_index(TOPIC_NODES, TOPIC_SERVICES)
    if services is None:
        return Result(None, index)
    return Result({"Node": render_node(st.nodes[req.tail]), "Services": services}, index)


def _datacenters(req: Request, ctx: Context) -> Result:
    return Result([ctx.identity.datacenter])


def _catalog_check(f: Fields) -> CheckDef:
    """A ``HealthCheck`` body: header fields plus an optional nested ``Definition``."""
    cdef = decode_check_def(f)
    cdef.type_hint = f.string("Type")
    definition = f.obj("Definition")
    if definition is not None:
        extra = decode_check_def(definition)
        cdef.http, cdef.tcp, cdef.grpc = extra.http, extra.tcp, extra.grpc
        cdef.interval, cdef.timeout = extra.interval, extra.timeout
        cdef.header, cdef.method, cdef.body = extra.header, extra.method, extra.body
        cdef.tls_server_name, cdef.tls_skip_verify = extra.tls_server_name, extra.tls_skip_verify
    return cdef


def _register(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "RegisterRequest")
    try:
        service_f = f.obj("Service")
        service = None
        if service_f is not None:
            service = decode_service_def(service_f, name_key="Service")
        check_fields = ([c] if (c := f.obj("Check")) is not None else []) + (f.objs("Checks") or [])
        reg = CatalogRegistration(
            node=f.string("Node"),
            address=f.string("Address"),
            node_id=f.string("ID"),
            datacenter=f.string("Datacenter"),
            tagged_addresses=f.str_map("TaggedAddresses"),
            node_meta=f.str_map("NodeMeta"),
            service=service,
            checks=[_catalog_check(c) for c in check_fields],
            skip_node_update=f.boolean("SkipNodeUpdate"),
        )
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    except ValueError as exc:
        raise HTTPError(500, str(exc)) from None
    try:
        ctx.registry.catalog_register(reg)
    except StateError as exc:
        raise HTTPError(exc.status, exc.message) from None
    return Result(True)


def _deregister(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "DeregisterRequest")
    try:
        node, service_id = f.string("Node"), f.string("ServiceID")
        check_id, datacenter = f.string("CheckID"), f.string("Datacenter")
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    try:
        ctx.registry.catalog_deregister(
            node, service_id=service_id, check_id=check_id, datacenter=datacenter
        )
    except StateError as exc:
        raise HTTPError(exc.status, exc.message) from None
    return Result(True)


def _read(handler: Handler, topics_fn: TopicsFn, empty: Any) -> dict[str, Endpoint]:
    return {"GET": Endpoint(handler, "read", blocking=True, topics=topics_fn, acl_empty=empty)}


def _service_topics(req: Request, ctx: Context) -> frozenset[str]:
    return frozenset({service_topic(req.tail)})


ROUTES = [
    Route("/v1/catalog/services", _read(_services, topics(TOPIC_SERVICES), {})),
    Route("/v1/catalog/service/", _read(_service, _service_topics, []), prefix=True),
    Route("/v1/catalog/connect/", _read(_connect, topics(TOPIC_SERVICES), []), prefix=True),
    Route("/v1/catalog/nodes", _read(_nodes, topics(TOPIC_NODES), [])),
    Route(
        "/v1/catalog/node/",
        _read(_node, topics(TOPIC_NODES, TOPIC_SERVICES, TOPIC_CHECKS), None),
        prefix=True,
    ),
    Route(
        "/v1/catalog/node-services/",
        _read(_node_services_list, topics(TOPIC_NODES, TOPIC_SERVICES), None),
        prefix=True,
    ),
    Route("/v1/catalog/datacenters", {"GET": Endpoint(_datacenters, "read", acl_empty=[])}),
    Route("/v1/catalog/register", {"PUT": Endpoint(_register, "write")}),
    Route("/v1/catalog/deregister", {"PUT": Endpoint(_deregister, "write")}),
]
