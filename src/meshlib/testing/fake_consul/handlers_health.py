"""The ``/v1/health/*`` endpoints: service health entries, checks by service, state and node.

``/v1/health/service/:name`` is what service discovery watches, so its rules are the ones the
README pins down: node checks belong to every instance on the node, ``?passing`` keeps an entry
only if *all* its checks pass, ``?tag`` needs every tag, ``?node-meta`` every pair, an unknown
service is ``200 []``, and entries come ordered by node then service ID. Its index is the
per-service index, so a watcher of one service sleeps through changes to all others.
"""

from __future__ import annotations

from typing import Any

from .endpoint import (
    Context,
    Endpoint,
    Handler,
    Route,
    TopicsFn,
    check_datacenter,
    node_meta_matches,
    parse_node_meta,
    request_filter,
    require_tail,
    topics,
)
from .model import PASSING, CheckRec, ServiceRec
from .render import render_check, render_health_entry
from .schemas import HEALTH_CHECK, HEALTH_ENTRY
from .state import TOPIC_CHECKS, TOPIC_SERVICES, service_topic
from .wire import Request, Result

__all__ = ["ROUTES", "has_all_tags", "health_entries", "is_connect_for"]


def has_all_tags(svc: ServiceRec, tags: list[str]) -> bool:
    """Consul's ``?tag`` rule: every requested tag present, compared case-insensitively."""
    have = {t.lower() for t in svc.tags}
    return all(t.lower() in have for t in tags)


def is_connect_for(svc: ServiceRec, name: str) -> bool:
    """A Connect-capable instance for ``name``: a proxy pointing at it, or a native service."""
    if svc.kind == "connect-proxy":
        proxy = {k.replace("_", "").lower(): v for k, v in (svc.proxy or {}).items()}
        return proxy.get("destinationservicename") == name
    native = any(k.lower() == "native" and v for k, v in (svc.connect or {}).items())
    return svc.name == name and native


def health_entries(req: Request, ctx: Context, instances: list[ServiceRec]) -> list[dict[str, Any]]:
    """Health entries for ``instances`` after the tag, node-meta, passing and bexpr filters."""
    st = ctx.state
    tags = req.params("tag")
    node_meta = parse_node_meta(req)
    passing = req.flag("passing")
    predicate = request_filter(req, HEALTH_ENTRY)
    out: list[dict[str, Any]] = []
    for svc in instances:
        node = st.nodes[svc.node]
        if tags and not has_all_tags(svc, tags):
            continue
        if node_meta and not node_meta_matches(node.meta, node_meta):
            continue
        checks = st.node_level_checks(svc.node) + st.instance_checks(svc)
        if passing and any(c.status != PASSING for c in checks):
            continue
        entry = render_health_entry(node, svc, [(c, st.tags_for(c)) for c in checks])
        if predicate is None or predicate(entry):
            out.append(entry)
    return out


def _service(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "service name")
    index = ctx.state.service_index(name)
    if req.param("peer"):
        return Result([], index)
    return Result(health_entries(req, ctx, ctx.state.instances(name)), index)


def _service_topics(req: Request, ctx: Context) -> frozenset[str]:
    return frozenset({service_topic(req.tail)})


def _connect(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "service name")
    st = ctx.state
    index = st.table_index(TOPIC_SERVICES, TOPIC_CHECKS)
    if req.param("peer"):
        return Result([], index)
    instances = [s for s in st.all_instances() if is_connect_for(s, name)]
    instances.sort(key=lambda s: (s.node, s.id))
    return Result(health_entries(req, ctx, instances), index)


def _ingress(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    require_tail(req, "service name")
    request_filter(req, HEALTH_ENTRY)
    return Result([], ctx.state.table_index(TOPIC_SERVICES))


def _render_checks(
    req: Request, ctx: Context, checks: list[CheckRec], *, node_meta: bool = True
) -> list[dict[str, Any]]:
    st = ctx.state
    wanted = parse_node_meta(req) if node_meta else {}
    predicate = request_filter(req, HEALTH_CHECK)
    out: list[dict[str, Any]] = []
    for check in checks:
        if wanted and not node_meta_matches(st.nodes[check.node].meta, wanted):
            continue
        rendered = render_check(check, st.tags_for(check))
        if predicate is None or predicate(rendered):
            out.append(rendered)
    return out


def _checks(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "service name")
    st = ctx.state
    checks = [c for svc in st.instances(name) for c in st.instance_checks(svc)]
    return Result(_render_checks(req, ctx, checks), st.service_index(name))


def _state(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    # Consul's state store does not validate the state: an unknown one simply matches nothing.
    wanted = require_tail(req, "check state")
    st = ctx.state
    checks = [c for c in st.all_checks() if wanted == "any" or c.status == wanted]
    return Result(_render_checks(req, ctx, checks), st.table_index(TOPIC_CHECKS))


def _node(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    node = require_tail(req, "node name")
    st = ctx.state
    checks = st.node_checks(node) if node in st.nodes else []
    return Result(_render_checks(req, ctx, checks, node_meta=False), st.table_index(TOPIC_CHECKS))


def _read(handler: Handler, topics_fn: TopicsFn) -> dict[str, Endpoint]:
    return {"GET": Endpoint(handler, "read", blocking=True, topics=topics_fn, acl_empty=[])}


ROUTES = [
    Route("/v1/health/service/", _read(_service, _service_topics), prefix=True),
    Route("/v1/health/connect/", _read(_connect, topics(TOPIC_SERVICES, TOPIC_CHECKS)), True),
    Route("/v1/health/ingress/", _read(_ingress, topics(TOPIC_SERVICES)), prefix=True),
    Route("/v1/health/checks/", _read(_checks, _service_topics), prefix=True),
    Route("/v1/health/state/", _read(_state, topics(TOPIC_CHECKS)), prefix=True),
    Route("/v1/health/node/", _read(_node, topics(TOPIC_CHECKS)), prefix=True),
]
