"""The ``/v1/config`` and ``/v1/discovery-chain/`` endpoints: L7 config entries and their chain.

``PUT /v1/config`` stores a ``service-resolver``, ``service-splitter`` or ``service-router``
after the checks of ``meshlib.traffic.entries`` (subset filters are compiled against the health
endpoint's schema, as Consul does); ``service-defaults`` and ``proxy-defaults`` are stored as
given, since Consul users write them first. Reads of one entry, of a kind, and of a service's
compiled chain (``meshlib.traffic.compiler``, Consul's JSON shape) are blocking queries that
wake on any config write. Answers follow ``config_endpoint.go``: a write answers ``true`` or
``false`` (check-and-set), a missing entry is a 404 naming kind and name, a delete answers
``{}`` (or a boolean with ``?cas``).

Known difference: Consul refuses routers and splitters for services whose protocol (from
``service-defaults``) is not HTTP; FakeConsul does not require the ``service-defaults`` entry.
"""

from __future__ import annotations

import json

from meshlib.traffic.bexpr import compile_filter
from meshlib.traffic.compiler import CompileError, compile_chain
from meshlib.traffic.entries import KINDS, EntryError, validate_entry

from .config_entries import TOPIC_CONFIG
from .endpoint import Context, Endpoint, Route, check_datacenter, require_tail, topics
from .schemas import HEALTH_ENTRY
from .wire import HTTPError, Request, Result

__all__ = ["ROUTES"]

_STORED_ONLY = ("service-defaults", "proxy-defaults")


def _check_filter(text: str) -> None:
    compile_filter(text, HEALTH_ENTRY)


def _cas(req: Request) -> int | None:
    raw = req.param("cas")
    if raw is None:
        return None
    if not raw.isdigit():
        raise HTTPError(400, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    return int(raw)


def _put(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    try:
        entry = json.loads(req.body or b"null")
    except ValueError as exc:
        raise HTTPError(400, f"Request decoding failed: {exc}") from None
    if not isinstance(entry, dict):
        raise HTTPError(400, "Request decoding failed: expected a JSON object")
    if entry.get("Kind") in _STORED_ONLY:
        if not isinstance(entry.get("Name"), str) or not entry["Name"]:
            raise HTTPError(400, "Name is required")
    else:
        try:
            validate_entry(entry, check_filter=_check_filter)
        except EntryError as exc:
            raise HTTPError(400, f"Request decoding failed: {exc}") from None
    st = ctx.state
    with st.write() as tx:
        ok = st.config.put(entry, cas=_cas(req), alloc=lambda: tx.index)
        if tx.changed:
            tx.topics.add(TOPIC_CONFIG)
    return Result(ok)


def _split(req: Request) -> tuple[str, str]:
    kind, _, name = require_tail(req, "config entry kind").partition("/")
    if kind not in (*KINDS, *_STORED_ONLY):
        raise HTTPError(400, f"invalid config entry kind: {kind}")
    return kind, name


def _get(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    kind, name = _split(req)
    store = ctx.state.config
    if not name:
        return Result([rec.render() for rec in store.list(kind)], store.table_index)
    rec = store.get(kind, name)
    if rec is None:
        return Result(
            raw=f'Config entry not found for "{kind}" / "{name}"'.encode(),
            index=store.table_index,
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    return Result(rec.render(), store.table_index)


def _delete(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    kind, name = _split(req)
    if not name:
        raise HTTPError(400, "Missing config entry name")
    cas = _cas(req)
    st = ctx.state
    with st.write() as tx:
        ok = st.config.delete(kind, name, cas=cas, alloc=lambda: tx.index)
        if tx.changed:
            tx.topics.add(TOPIC_CONFIG)
    return Result(ok if cas is not None else {})


def _chain(req: Request, ctx: Context) -> Result:
    check_datacenter(req, ctx)
    name = require_tail(req, "chain name")
    dc = req.param("compile-dc") or ctx.identity.datacenter
    store = ctx.state.config
    try:
        chain = compile_chain(name, datacenter=dc, lookup=store.entry)
    except CompileError as exc:
        raise HTTPError(500, str(exc)) from None
    return Result({"Chain": chain}, max(store.table_index, 1))


_BLOCKING = topics(TOPIC_CONFIG)

ROUTES = [
    Route("/v1/config", {"PUT": Endpoint(_put, "write")}),
    Route(
        "/v1/config/",
        {
            "GET": Endpoint(_get, "read", blocking=True, topics=_BLOCKING),
            "DELETE": Endpoint(_delete, "write"),
        },
        prefix=True,
    ),
    Route(
        "/v1/discovery-chain/",
        {"GET": Endpoint(_chain, "read", blocking=True, topics=_BLOCKING)},
        prefix=True,
    ),
]
