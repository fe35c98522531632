"""The ``/v1/agent/*`` and ``/v1/status/*`` endpoints: local services, checks, TTLs, maintenance.

These are the agent's *local* view: services registered through this agent (not the server's
``consul`` service), checks without ``serfHealth``, zero Raft indexes, and no ``X-Consul-Index``
(the real agent does not block on these, except ``/agent/service/:id`` by content hash). Writes
answer 200 with an empty body; errors carry the agent's texts and status codes.
"""

from __future__ import annotations

from typing import Any

from meshlib.traffic.durations import parse_go_bool

from .decode import DecodeError, decode_check_def, decode_service_def
from .endpoint import Context, Endpoint, Route, body_fields, request_filter, require_tail
from .model import CRITICAL, PASSING, VALID_STATUSES, WARNING, CheckRec
from .registry import NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX
from .render import (
    agent_content_hash,
    render_agent_service,
    render_api_check,
    render_check,
    sorted_map,
)
from .schemas import AGENT_SERVICE, HEALTH_CHECK
from .state import StateError, service_topic
from .wire import HTTPError, Request, Result

__all__ = ["ROUTES", "aggregated_status"]

# The agent caps check output it stores (checks.BufSize).
_OUTPUT_LIMIT = 4 * 1024
_STATUS_CODES = {PASSING: 200, WARNING: 429, CRITICAL: 503, "maintenance": 503}
_SEVERITY = {PASSING: 0, WARNING: 1, CRITICAL: 2, "maintenance": 3}


def aggregated_status(checks: list[CheckRec]) -> str:
    """Go api ``HealthChecks.AggregatedStatus``: maintenance > critical > warning > passing."""
    if any(
        c.check_id == NODE_MAINT_CHECK_ID or c.check_id.startswith(SERVICE_MAINT_PREFIX)
        for c in checks
    ):
        return "maintenance"
    statuses = {c.status for c in checks}
    for status in (CRITICAL, WARNING):
        if status in statuses:
            return status
    return PASSING


def _state_error(exc: StateError) -> HTTPError:
    return HTTPError(exc.status, exc.message)


def _services(req: Request, ctx: Context) -> Result:
    dc = ctx.identity.datacenter
    predicate = request_filter(req, AGENT_SERVICE)
    out: dict[str, Any] = {}
    for svc in ctx.registry.agent_services():
        rendered = render_agent_service(svc, dc)
        if predicate is None or predicate(rendered):
            out[svc.id] = rendered
    return Result(sorted_map(out))


def _service(req: Request, ctx: Context) -> Result:
    service_id = require_tail(req, "service ID")
    svc = ctx.state.service(ctx.registry.node, service_id)
    if svc is None or service_id == "consul":
        raise HTTPError(404, f"unknown service ID: {service_id}")
    dc = ctx.identity.datacenter
    digest = agent_content_hash(svc, dc)
    return Result(
        render_agent_service(svc, dc, content_hash=digest),
        content_hash=digest,
        headers={"X-Consul-Contenthash": digest},
    )


def _service_topics(req: Request, ctx: Context) -> frozenset[str]:
    svc = ctx.state.service(ctx.registry.node, req.tail)
    return frozenset({service_topic(svc.name)}) if svc is not None else frozenset()


def _checks(req: Request, ctx: Context) -> Result:
    predicate = request_filter(req, HEALTH_CHECK)
    st = ctx.state
    out: dict[str, Any] = {}
    for check in ctx.registry.agent_checks():
        rendered = render_check(check, st.tags_for(check), agent_local=True)
        if predicate is None or predicate(rendered):
            out[check.check_id] = rendered
    return Result(sorted_map(out))


def _register_service(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "ServiceDefinition")
    try:
        defn = decode_service_def(f)
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from None
    try:
        # Only a bare flag or exactly "true" counts, as in AgentRegisterService.
        replace = req.param("replace-existing-checks") in ("", "true")
        ctx.registry.register_service(defn, replace_existing_checks=replace)
    except StateError as exc:
        raise _state_error(exc) from None
    return Result(empty_body=True)


def _deregister_service(req: Request, ctx: Context) -> Result:
    ctx.registry.deregister_service(require_tail(req, "service ID"))
    return Result(empty_body=True)


def _enable(req: Request) -> bool:
    raw = req.param("enable")
    if raw is None or raw == "":
        raise HTTPError(400, "Missing value for enable")
    try:
        return parse_go_bool(raw)
    except ValueError:
        raise HTTPError(400, f'Invalid value for enable: "{raw}"') from None


def _service_maintenance(req: Request, ctx: Context) -> Result:
    service_id = require_tail(req, "service ID")
    enable = _enable(req)
    try:
        ctx.registry.service_maintenance(service_id, enable, req.param("reason") or "")
    except StateError as exc:
        raise _state_error(exc) from None
    return Result(empty_body=True)


def _node_maintenance(req: Request, ctx: Context) -> Result:
    ctx.registry.node_maintenance(_enable(req), req.param("reason") or "")
    return Result(empty_body=True)


def _register_check(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "CheckDefinition")
    try:
        defn = decode_check_def(f)
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    try:
        ctx.registry.register_check(defn)
    except StateError as exc:
        raise _state_error(exc) from None
    return Result(empty_body=True)


def _deregister_check(req: Request, ctx: Context) -> Result:
    ctx.registry.deregister_check(require_tail(req, "check ID"))
    return Result(empty_body=True)


def _ttl(status: str) -> Any:
    def handler(req: Request, ctx: Context) -> Result:
        check_id = require_tail(req, "check ID")
        try:
            ctx.registry.update_ttl(check_id, status, req.param("note") or "")
        except StateError as exc:
            raise _state_error(exc) from None
        return Result(empty_body=True)

    return handler


def _update_check(req: Request, ctx: Context) -> Result:
    check_id = require_tail(req, "check ID")
    f = body_fields(req, "checkUpdate")
    try:
        status, output = f.string("Status"), f.string("Output")
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    if status not in VALID_STATUSES:
        raise HTTPError(400, f"Invalid check status: '{status}'")
    raw = output.encode()
    if len(raw) > _OUTPUT_LIMIT:
        head = raw[:_OUTPUT_LIMIT].decode(errors="ignore")
        output = f"{head} ... (captured {_OUTPUT_LIMIT} of {len(raw)} bytes)"
    try:
        ctx.registry.update_ttl(check_id, status, output)
    except StateError as exc:
        raise _state_error(exc) from None
    return Result(empty_body=True)


def _health_info(ctx: Context, service_id: str) -> tuple[str, dict[str, Any]] | None:
    st, reg = ctx.state, ctx.registry
    svc = st.service(reg.node, service_id)
    if svc is None or service_id == "consul":
        return None
    node_checks = [c for c in reg.agent_checks() if not c.service_id]
    checks = node_checks + st.instance_checks(svc)
    status = aggregated_status(checks)
    info = {
        "AggregatedStatus": status,
        "Service": render_agent_service(svc, ctx.identity.datacenter),
        "Checks": [render_api_check(c, st.tags_for(c)) for c in checks],
    }
    return status, info


def _wants_text(req: Request) -> bool:
    return req.param("format") == "text" or req.headers.get("accept", "").startswith("text/plain")


def _health_answer(req: Request, status: str, data: Any, code: int) -> Result:
    # A CodeWithPayloadError in Consul: the reason also travels as X-Consul-Reason.
    headers = {"X-Consul-Reason": status}
    if _wants_text(req):
        return Result(raw=status.encode(), status=code, content_type="text/plain", headers=headers)
    return Result(data, status=code, headers=headers)


def _health_by_id(req: Request, ctx: Context) -> Result:
    service_id = require_tail(req, "serviceID")
    found = _health_info(ctx, service_id)
    if found is None:
        missing = {"AggregatedStatus": CRITICAL, "Service": None, "Checks": None}
        return _health_answer(req, f"ServiceId {service_id} not found", missing, 404)
    status, info = found
    return _health_answer(req, status, info, _STATUS_CODES[status])


def _health_by_name(req: Request, ctx: Context) -> Result:
    name = require_tail(req, "service Name")
    results: list[dict[str, Any]] = []
    worst = ""
    for svc in ctx.registry.agent_services():
        if svc.name != name:
            continue
        found = _health_info(ctx, svc.id)
        if found is None:
            continue
        status, info = found
        results.append(info)
        if not worst or _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    if not results:
        return _health_answer(req, f"ServiceName {name} Not Found", [], 404)
    return _health_answer(req, worst, results, _STATUS_CODES[worst])


def _self(req: Request, ctx: Context) -> Result:
    ident = ctx.identity
    leader = f"{ident.node_address}:8300"
    member = _member(ctx)
    config = {
        "Datacenter": ident.datacenter,
        "PrimaryDatacenter": ident.datacenter,
        "NodeName": ident.node_name,
        "NodeID": ident.node_id,
        "Revision": "meshlib-fake",
        "Server": True,
        "Version": ident.version,
        "BuildDate": "2025-01-01T00:00:00Z",
    }
    stats = {
        "agent": {"check_monitors": "0", "check_ttls": "0", "checks": "0", "services": "0"},
        "consul": {
            "bootstrap": "false",
            "known_datacenters": "1",
            "leader": "true",
            "leader_addr": leader,
            "server": "true",
        },
    }
    return Result(
        {
            "Config": config,
            "DebugConfig": {"Datacenter": ident.datacenter, "NodeName": ident.node_name},
            "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
            "Member": member,
            "Stats": stats,
            "Meta": {"consul-network-segment": "", "consul-version": ident.version},
            "xDS": {"SupportedProxies": {"envoy": []}, "Port": -1, "Ports": {}},
        }
    )


def _member(ctx: Context, *, wan: bool = False) -> dict[str, Any]:
    ident = ctx.identity
    return {
        "Name": f"{ident.node_name}.{ident.datacenter}" if wan else ident.node_name,
        "Addr": ident.node_address,
        "Port": 8302 if wan else 8301,
        "Tags": {
            "build": f"{ident.version}:meshlib",
            "dc": ident.datacenter,
            "id": ident.node_id,
            "port": "8300",
            "role": "consul",
            "vsn": "2",
        },
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


def _members(req: Request, ctx: Context) -> Result:
    return Result([_member(ctx, wan=req.flag("wan"))])


def _reload(req: Request, ctx: Context) -> Result:
    return Result(empty_body=True)


def _leader(req: Request, ctx: Context) -> Result:
    return Result(f"{ctx.identity.node_address}:8300")


def _peers(req: Request, ctx: Context) -> Result:
    return Result([f"{ctx.identity.node_address}:8300"])


def _write(handler: Any) -> dict[str, Endpoint]:
    return {"PUT": Endpoint(handler, "write")}


ROUTES = [
    Route("/v1/agent/self", {"GET": Endpoint(_self, "read")}),
    Route("/v1/agent/members", {"GET": Endpoint(_members, "read", acl_empty=[])}),
    Route("/v1/agent/services", {"GET": Endpoint(_services, "read", acl_empty={})}),
    Route(
        "/v1/agent/service/",
        {"GET": Endpoint(_service, "read", topics=_service_topics)},
        prefix=True,
    ),
    Route("/v1/agent/service/register", _write(_register_service)),
    Route("/v1/agent/service/deregister/", _write(_deregister_service), prefix=True),
    Route("/v1/agent/service/maintenance/", _write(_service_maintenance), prefix=True),
    Route("/v1/agent/checks", {"GET": Endpoint(_checks, "read", acl_empty={})}),
    Route("/v1/agent/check/register", _write(_register_check)),
    Route("/v1/agent/check/deregister/", _write(_deregister_check), prefix=True),
    Route("/v1/agent/check/pass/", _write(_ttl(PASSING)), prefix=True),
    Route("/v1/agent/check/warn/", _write(_ttl(WARNING)), prefix=True),
    Route("/v1/agent/check/fail/", _write(_ttl(CRITICAL)), prefix=True),
    Route("/v1/agent/check/update/", _write(_update_check), prefix=True),
    Route("/v1/agent/maintenance", _write(_node_maintenance)),
    Route("/v1/agent/reload", _write(_reload)),
    Route(
        "/v1/agent/health/service/name/",
        {"GET": Endpoint(_health_by_name, "read")},
        prefix=True,
    ),
    Route(
        "/v1/agent/health/service/id/",
        {"GET": Endpoint(_health_by_id, "read")},
        prefix=True,
    ),
    Route("/v1/status/leader", {"GET": Endpoint(_leader, "none")}),
    Route("/v1/status/peers", {"GET": Endpoint(_peers, "none")}),
]
