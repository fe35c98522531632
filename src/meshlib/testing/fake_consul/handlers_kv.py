"""The ``/v1/kv/`` endpoint: get (single, ``?recurse``, ``?keys``, ``?raw``), put and delete,
and with it the ``/v1/session/`` endpoints whose sessions hold its locks.

Answers follow Consul's ``kvs_endpoint.go``: a missing key is a 404 that still carries
``X-Consul-Index`` (so a client can block until the key appears), values are base64 with
``null`` for empty, writes answer ``true``/``false`` for check-and-set, and ``?cas=0`` means
"only if absent". ``?acquire`` / ``?release`` lock a key for a session (rules in
``sessions``); an unknown session is a 500 ``Invalid session``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from .endpoint import Context, Endpoint, Route, check_datacenter, topics
from .handlers_session import SESSION_ROUTES, reap_expired
from .render import render_kv
from .state import TOPIC_KV
from .wire import HTTPError, Request, Result

__all__ = ["MAX_VALUE_SIZE", "ROUTES"]

MAX_VALUE_SIZE = 512 * 1024


def _uint(req: Request, name: str) -> int | None:
    raw = req.param(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) >= 2**64:
        raise HTTPError(500, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    return int(raw)


def _conflicting(req: Request, *flags: str) -> None:
    """Consul's ``conflictingFlags``: 400 naming the whole (sorted) query string."""
    if sum(req.has(f) for f in flags) > 1:
        pairs = sorted((k, v) for k, values in req.query.items() for v in values)
        raise HTTPError(400, f"Conflicting flags: {urlencode(pairs)}\n")


def _get(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    kv = ctx.state.kv
    key = req.tail
    if req.has("keys"):
        # The docs' historic misspelling "seperator" is still accepted.
        separator = req.param("separator") or req.param("seperator")
        found = kv.keys(key, separator)
        index = kv.index_for_prefix(key)
        if not found and key:
            return Result(None, index, status=404, empty_body=True)
        return Result(found, index)
    if req.has("recurse"):
        entries = kv.list_prefix(key)
        index = kv.index_for_prefix(key)
        if not entries:
            return Result(None, index, status=404, empty_body=True)
        return Result([render_kv(e) for e in entries], index)
    if not key:
        raise HTTPError(400, "Missing key name")
    entry = kv.get(key)
    index = kv.index_for_key(key)
    if entry is None:
        return Result(None, index, status=404, empty_body=True)
    if req.has("raw"):
        # Consul's XSS hardening for raw values: fixed type, no sniffing, sandboxed.
        return Result(
            raw=entry.value or b"",
            index=index,
            content_type="text/plain",
            headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
        )
    return Result([render_kv(entry)], index)


def _put(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    key = req.tail
    if not key:
        raise HTTPError(400, "Missing key name")
    _conflicting(req, "cas", "acquire", "release")
    flags = _uint(req, "flags") or 0
    cas = _uint(req, "cas")
    session = req.param("acquire") if req.has("acquire") else req.param("release")
    if len(req.body) > MAX_VALUE_SIZE:
        raise HTTPError(
            413,
            f"Request body({len(req.body)} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. "
            "See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
        )
    if session is not None:
        return _locking(req, ctx, key, session, flags)
    st = ctx.state
    with st.write() as tx:
        ok = st.kv.put(key, req.body, flags=flags, cas=cas, alloc=lambda: tx.index)
        if ok:
            tx.tables.add(TOPIC_KV)
    return Result(ok)


def _locking(req: Request, ctx: Context, key: str, session_id: str, flags: int) -> Result:
    """``?acquire=`` / ``?release=``: ``true`` when the lock was taken or freed, ``false`` when
    another session holds it, it is in a lock delay, or (release) this session does not hold it."""
    reap_expired(ctx)
    st = ctx.state
    with st.write() as tx:
        now = st.clock()
        session = st.sessions.get(session_id, now)
        if session is None:
            raise HTTPError(500, f'Invalid session "{session_id}"')
        if req.has("release"):
            ok = st.kv.unlock(
                key, req.body, flags=flags, session=session_id, alloc=lambda: tx.index
            )
        else:
            entry = st.kv.get(key)
            if entry is not None and entry.session is not None:
                ok = entry.session == session_id
            else:
                ok = not st.sessions.delayed(key, now)
            if ok:
                st.kv.lock(key, req.body, flags=flags, session=session_id, alloc=lambda: tx.index)
        if ok:
            tx.tables.add(TOPIC_KV)
    return Result(ok)


def _delete(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    _conflicting(req, "recurse", "cas")
    recurse = req.has("recurse")
    if not req.tail and not recurse:
        raise HTTPError(400, "Missing key name")
    cas = _uint(req, "cas")
    st = ctx.state
    with st.write() as tx:
        ok = st.kv.delete(req.tail, recurse=recurse, cas=cas, alloc=lambda: tx.index)
        if tx.changed:
            tx.tables.add(TOPIC_KV)
    return Result(ok)


ROUTES = [
    Route(
        "/v1/kv/",
        {
            "GET": Endpoint(_get, "read", blocking=True, topics=topics(TOPIC_KV)),
            "PUT": Endpoint(_put, "write"),
            "DELETE": Endpoint(_delete, "write"),
        },
        prefix=True,
    ),
    *SESSION_ROUTES,
]
