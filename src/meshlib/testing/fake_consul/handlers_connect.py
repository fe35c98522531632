"""The Connect endpoints: CA roots, service leaves, authorize, and the intentions API.

Shapes, codes and texts follow Consul 1.20: ``agent/connect_ca_endpoint.go`` (roots, ``?pem``),
``agent/agent_endpoint.go`` (the agent's roots, leaf and authorize), ``agent/connect_auth.go``
(authorize's 400s and reasons) and ``agent/intentions_endpoint.go`` (``/exact``, by ID, check,
match). Errors that Consul's RPC layer returns untyped (``Connect must be enabled ...``,
``required query parameter 'source' not set``) are 500s there, so they are 500s here. Roots and
leaves are blocking reads that wake on rotation and re-issue; the intention reads block on any
intention write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshlib.traffic.durations import parse_go_bool

from .connect_ca import TOPIC_CA, ConnectCA, LeafRec, RootRec, go_time, leaf_topic
from .connect_state import ConnectState
from .endpoint import (
    Context,
    Endpoint,
    Handler,
    Route,
    body_fields,
    check_datacenter,
    require_tail,
    topics,
)
from .intentions import TOPIC_INTENTIONS, IntentionRec, parse_service_uri, validate
from .wire import HTTPError, Request, Result

__all__ = ["ROUTES", "render_leaf", "render_roots"]


def _connect(ctx: Context) -> ConnectState:
    if ctx.connect is None:  # a Context built without Connect (unit tests of other handlers)
        raise HTTPError(500, "Connect must be enabled in order to use this endpoint")
    return ctx.connect


def _ca_call(handler: Handler) -> Handler:
    """Turn a missing ``cryptography`` into a plain-text 500 that says what to install."""

    def wrapped(req: Request, ctx: Context) -> Result:
        try:
            return handler(req, ctx)
        except ImportError as exc:
            raise HTTPError(500, str(exc)) from None

    return wrapped


# ------------------------------------------------------------------------- rendering


def _render_root(ca: ConnectCA, root: RootRec) -> dict[str, Any]:
    return {
        "ID": root.id,
        "Name": root.name,
        "SerialNumber": root.serial,
        "SigningKeyID": root.issued.key_id,
        "ExternalTrustDomain": ca.cluster_id,
        "NotBefore": go_time(root.not_before),
        "NotAfter": go_time(root.not_after),
        "RootCert": root.issued.cert_pem,
        "IntermediateCerts": None,
        "Active": root.active,
        "PrivateKeyType": "ec",
        "PrivateKeyBits": 256,
        "CreateIndex": root.create_index,
        "ModifyIndex": root.modify_index,
    }


def render_roots(ca: ConnectCA) -> dict[str, Any]:
    """``IndexedCARoots``; the state store lists roots ordered by ID."""
    roots = sorted(ca.roots(), key=lambda r: r.id)
    active = next(r.id for r in roots if r.active)
    return {
        "ActiveRootID": active,
        "TrustDomain": ca.trust_domain,
        "Roots": [_render_root(ca, r) for r in roots],
    }


def render_leaf(leaf: LeafRec) -> dict[str, Any]:
    """``IssuedCert`` as the agent's leaf endpoint returns it (OSS: no Namespace)."""
    return {
        "SerialNumber": leaf.serial,
        "CertPEM": leaf.issued.cert_pem,
        "PrivateKeyPEM": leaf.issued.key_pem,
        "Service": leaf.service,
        "ServiceURI": leaf.uri,
        "ValidAfter": go_time(leaf.valid_after),
        "ValidBefore": go_time(leaf.valid_before),
        "CreateIndex": leaf.index,
        "ModifyIndex": leaf.index,
    }


# ------------------------------------------------------------------------------- CA


@_ca_call
def _agent_roots(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    ca = _connect(ctx).ca
    return Result(render_roots(ca), ca.roots_index)


@_ca_call
def _roots(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    pem = False
    raw = req.param("pem")
    if raw:
        try:
            pem = parse_go_bool(raw)
        except ValueError:
            raise HTTPError(400, "The 'pem' query parameter must be a boolean value") from None
    ca = _connect(ctx).ca
    doc = render_roots(ca)
    if not pem:
        return Result(doc, ca.roots_index)
    chain = "".join(r["RootCert"] + "".join(r["IntermediateCerts"] or ()) for r in doc["Roots"])
    return Result(
        index=ca.roots_index, raw=chain.encode(), content_type="application/pem-certificate-chain"
    )


@_ca_call
def _leaf(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    service = require_tail(req, "service name")
    leaf = _connect(ctx).ca.leaf(service)
    return Result(render_leaf(leaf), leaf.index)


def _leaf_topics(req: Request, ctx: Context) -> frozenset[str]:
    return frozenset({TOPIC_CA, leaf_topic(req.tail)})


def _authorize(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "ConnectAuthorizeRequest")
    target = f.string("Target")
    if not target:
        raise HTTPError(400, "Target service must be specified")
    source = parse_service_uri(f.string("ClientCertURI"))
    conn = _connect(ctx)
    allowed, reason = conn.intentions.decide(source, target, conn.default_allow)
    return Result({"Authorized": allowed, "Reason": reason})


# ----------------------------------------------------------------------- intentions


def _name(req: Request, param: str) -> str:
    values = req.params(param)
    if len(values) != 1 or not values[0]:
        raise HTTPError(500, f"required query parameter '{param}' not set")
    value = values[0]
    return value[len("default/") :] if value.startswith("default/") else value


def _writable(ctx: Context) -> ConnectState:
    conn = _connect(ctx)
    conn.ca.require_enabled()
    return conn


def _list(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    ixns = _connect(ctx).intentions
    return Result([i.render() for i in ixns.all()], ixns.index)


def _create_legacy(req: Request, ctx: Context) -> Result:
    f = body_fields(req, "Intention")
    conn = _writable(ctx)
    source, destination = f.string("SourceName"), f.string("DestinationName")
    if not source or not destination:
        missing = "SourceName" if not source else "DestinationName"
        raise HTTPError(500, f"Invalid Intention: {missing} must be set")
    action = f.string("Action")
    validate(action, f.string("SourceType"))
    meta = {str(k): str(v) for k, v in (f.dict_value("Meta") or {}).items()}
    rec = conn.intentions.upsert(
        source, destination, action, description=f.string("Description"), meta=meta, legacy=True
    )
    return Result({"ID": rec.id})


def _exact_get(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    source, destination = _name(req, "source"), _name(req, "destination")
    ixns = _connect(ctx).intentions
    rec = ixns.get(source, destination)
    if rec is None:
        raise HTTPError(404, "Intention not found")
    return Result(rec.render(), ixns.index)


def _exact_put(req: Request, ctx: Context) -> Result:
    source, destination = _name(req, "source"), _name(req, "destination")
    f = body_fields(req, "Intention")
    conn = _writable(ctx)
    if f.raw("Permissions"):
        raise HTTPError(500, "meshlib FakeConsul: L7 intentions (Permissions) are not supported")
    action = f.string("Action")
    validate(action, f.string("SourceType"))
    conn.intentions.upsert(source, destination, action, description=f.string("Description"))
    return Result(True)


def _exact_delete(req: Request, ctx: Context) -> Result:
    source, destination = _name(req, "source"), _name(req, "destination")
    _writable(ctx).intentions.delete(source, destination)
    return Result(True)


def _by_id(req: Request, ctx: Context) -> IntentionRec:
    rec = _connect(ctx).intentions.by_id(require_tail(req, "intention ID"))
    if rec is None:
        raise HTTPError(404, "Intention not found")
    return rec


def _get_by_id(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    return Result(_by_id(req, ctx).render(), _connect(ctx).intentions.index)


def _delete_by_id(req: Request, ctx: Context) -> Result:
    conn = _writable(ctx)
    rec = conn.intentions.by_id(require_tail(req, "intention ID"))
    if rec is not None:
        conn.intentions.delete(rec.source, rec.destination)
    return Result(True)


def _check(req: Request, ctx: Context) -> Result:
    source, destination = _name(req, "source"), _name(req, "destination")
    conn = _connect(ctx)
    allowed, _ = conn.intentions.decide(source, destination, conn.default_allow)
    return Result({"Allowed": allowed})


def _match(req: Request, ctx: Context) -> Result:
    by = req.params("by")
    if len(by) != 1:
        raise HTTPError(500, "required query parameter 'by' not set")
    if by[0] not in ("source", "destination"):
        raise HTTPError(500, "'by' parameter must be one of 'source' or 'destination'")
    names = req.params("name")
    if not names:
        raise HTTPError(500, "required query parameter 'name' not set")
    ixns = _connect(ctx).intentions
    find: Callable[[str], list[IntentionRec]] = (
        ixns.matching_source if by[0] == "source" else ixns.matching
    )
    return Result({n: [i.render() for i in find(n)] for n in names}, ixns.index)


def _blocking_read(handler: Handler, topic: str, **kw: Any) -> Endpoint:
    return Endpoint(handler, "read", blocking=True, topics=topics(topic), **kw)


_INTENTIONS = "/v1/connect/intentions"

ROUTES = [
    Route(
        "/v1/agent/connect/ca/roots",
        {"GET": Endpoint(_agent_roots, "none", blocking=True, topics=topics(TOPIC_CA))},
    ),
    Route(
        "/v1/connect/ca/roots",
        {"GET": Endpoint(_roots, "none", blocking=True, topics=topics(TOPIC_CA))},
    ),
    Route(
        "/v1/agent/connect/ca/leaf/",
        {"GET": Endpoint(_leaf, "write", blocking=True, topics=_leaf_topics)},
        prefix=True,
    ),
    Route("/v1/agent/connect/authorize", {"POST": Endpoint(_authorize, "write")}),
    Route(
        _INTENTIONS,
        {
            "GET": _blocking_read(_list, TOPIC_INTENTIONS, acl_empty=[]),
            "POST": Endpoint(_create_legacy, "write"),
        },
    ),
    Route(
        _INTENTIONS + "/exact",
        {
            "GET": _blocking_read(_exact_get, TOPIC_INTENTIONS),
            "PUT": Endpoint(_exact_put, "write"),
            "DELETE": Endpoint(_exact_delete, "write"),
        },
    ),
    Route(_INTENTIONS + "/check", {"GET": Endpoint(_check, "read")}),
    Route(_INTENTIONS + "/match", {"GET": _blocking_read(_match, TOPIC_INTENTIONS)}),
    Route(
        _INTENTIONS + "/",
        {
            "GET": _blocking_read(_get_by_id, TOPIC_INTENTIONS),
            "DELETE": Endpoint(_delete_by_id, "write"),
        },
        prefix=True,
    ),
]
