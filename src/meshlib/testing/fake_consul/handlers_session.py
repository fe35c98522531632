"""The ``/v1/session/`` endpoints: create, destroy, renew, info, node and list.

Answers follow Consul's ``session_endpoint.go``: ``create`` answers ``{"ID": ...}`` and
validates like the server (the node and its checks must exist, ``Behavior`` is ``release`` or
``delete``, a TTL lies within 10s..24h, the lock delay is at most 60 s and a bare number under
1000 means seconds), ``destroy`` answers ``true`` even for an unknown session, ``renew`` of an
unknown one is a 404, and the reads answer a JSON list (empty when nothing matches); they are
blocking queries on the sessions' index. The session rules themselves are in ``sessions``. The
routes are served with the KV endpoint's (``handlers_kv.ROUTES``), whose locks they hold.
"""

from __future__ import annotations

from meshlib.traffic.durations import parse_go_duration

from .endpoint import (
    Context,
    Endpoint,
    Route,
    body_fields,
    check_datacenter,
    require_tail,
    topics,
)
from .model import CRITICAL
from .sessions import MAX_LOCK_DELAY, Session
from .state import TOPIC_KV
from .wire import HTTPError, Request, Result

__all__ = ["SESSION_ROUTES", "reap_expired"]

_SERF = "serfHealth"


def reap_expired(ctx: Context) -> None:
    """Destroy sessions whose TTL lapsed, releasing their locks (Consul's session timers)."""
    st = ctx.state
    now = st.clock()
    for session_id in st.sessions.expired(now):
        with st.write() as tx:
            if st.sessions.destroy(session_id, now, lambda: tx.index):
                tx.tables.add(TOPIC_KV)


def _lock_delay(raw: object) -> float:
    if raw is None:
        return 15.0
    if isinstance(raw, str):
        try:
            seconds = parse_go_duration(raw)
        except ValueError as exc:
            raise HTTPError(400, f"Request decode failed: {exc}") from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        # Consul: a number below 1000 is seconds, otherwise nanoseconds.
        seconds = float(raw) if raw < 1000 else raw / 1e9
    else:
        raise HTTPError(400, "Request decode failed: LockDelay must be a duration")
    if seconds > MAX_LOCK_DELAY:
        raise HTTPError(400, "Lock delay must be less than 1m0s")
    return max(0.0, seconds)


def _create(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    fields = body_fields(req, "structs.Session") if req.body.strip() else None

    def get(name: str) -> object:
        return fields.raw(name) if fields is not None else None

    node = str(get("Node") or ctx.identity.node_name)
    behavior = str(get("Behavior") or "release")
    if behavior not in ("release", "delete"):
        raise HTTPError(400, f"Invalid Behavior setting '{behavior}'")
    ttl_text = str(get("TTL") or "")
    ttl: float | None = None
    if ttl_text:
        try:
            ttl = parse_go_duration(ttl_text)
        except ValueError:
            ttl = -1.0
        if not 10.0 <= ttl <= 86400.0:
            raise HTTPError(400, f"Invalid Session TTL '{ttl_text}', must be between [10s=24h0m0s]")
    checks = get("NodeChecks")
    if checks is None:
        checks = get("Checks")  # the pre-1.7 name py-consul still sends
    if checks is not None and not isinstance(checks, list):
        raise HTTPError(400, "Request decode failed: NodeChecks must be a list of check IDs")
    node_checks = [_SERF] if checks is None else [str(c) for c in checks]
    st = ctx.state
    with st.write() as tx:
        if node not in st.nodes:
            raise HTTPError(500, "Missing node registration")
        for check_id in node_checks:
            check = st.check(node, check_id)
            if check is None:
                raise HTTPError(500, f"Missing check '{check_id}' registration")
            if check.status == CRITICAL:
                raise HTTPError(500, f"Check '{check_id}' is in critical state")
        session = Session(
            id="",
            node=node,
            name=str(get("Name") or ""),
            lock_delay=_lock_delay(get("LockDelay")),
            behavior=behavior,
            ttl=ttl,
            node_checks=node_checks,
        )
        st.sessions.create(session, tx.index, st.clock())
        tx.tables.add(TOPIC_KV)  # wakes blocking session reads (they share the KV topic)
    return Result({"ID": session.id})


def _destroy(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    session_id = require_tail(req, "session")
    st = ctx.state
    with st.write() as tx:
        if st.sessions.destroy(session_id, st.clock(), lambda: tx.index):
            tx.tables.add(TOPIC_KV)
    return Result(True)


def _renew(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    session_id = require_tail(req, "session")
    reap_expired(ctx)
    st = ctx.state
    with st.lock:
        session = st.sessions.get(session_id, st.clock())
        if session is None:
            raise HTTPError(404, f"Session id '{session_id}' not found")
        session.renewed_at = st.clock()
        return Result([session.render()], st.sessions.table_index)


def _read(which: str) -> Endpoint:
    def handler(req: Request, ctx: Context) -> Result:
        check_datacenter(req, ctx)
        reap_expired(ctx)
        st = ctx.state
        with st.lock:
            live = st.sessions.live(st.clock())
            if which == "info":
                wanted = require_tail(req, "session")
                live = [s for s in live if s.id == wanted]
            elif which == "node":
                wanted = require_tail(req, "node")
                live = [s for s in live if s.node == wanted]
            return Result([s.render() for s in live], st.sessions.table_index)

    return Endpoint(handler, "read", blocking=True, topics=topics(TOPIC_KV))


SESSION_ROUTES = [
    Route("/v1/session/create", {"PUT": Endpoint(_create, "write")}),
    Route("/v1/session/destroy/", {"PUT": Endpoint(_destroy, "write")}, prefix=True),
    Route("/v1/session/renew/", {"PUT": Endpoint(_renew, "write")}, prefix=True),
    Route("/v1/session/info/", {"GET": _read("info")}, prefix=True),
    Route("/v1/session/node/", {"GET": _read("node")}, prefix=True),
    Route("/v1/session/list", {"GET": _read("list")}),
]
