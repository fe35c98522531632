"""What an endpoint is (handler, ACL access, blocking topics), the router, and shared helpers.

Every handler module exports ``ROUTES``; the server builds one ``Router`` from them. An endpoint
declares whether it reads or writes (for ACLs), whether it is a blocking read (``?index``,
``?wait``, consistency and ``X-Consul-*`` headers), and which change *topics* can alter its
answer, so a parked query wakes only for changes that matter to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshlib.traffic.bexpr import FilterError, Predicate, Struct, compile_filter

from .connect_state import ConnectState
from .decode import DecodeError, Fields, decode_json_object
from .registry import AgentIdentity, Registry
from .state import State
from .wire import HTTPError, Request, Result

__all__ = [
    "NO_ACL_EMPTY",
    "Context",
    "Endpoint",
    "Handler",
    "Route",
    "Router",
    "TopicsFn",
    "body_fields",
    "check_datacenter",
    "node_meta_matches",
    "parse_node_meta",
    "request_filter",
    "require_tail",
    "topics",
]


@dataclass(frozen=True, slots=True)
class Context:
    """What handlers act on: the store, the write rules, the agent's identity, Connect."""

    state: State
    registry: Registry
    identity: AgentIdentity
    connect: ConnectState | None = None


Handler = Callable[[Request, Context], Result]
TopicsFn = Callable[[Request, Context], frozenset[str]]


class _NoEmpty:
    def __repr__(self) -> str:
        return "NO_ACL_EMPTY"


NO_ACL_EMPTY: Any = _NoEmpty()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One method on one route.

    ``access`` is ``"read"``, ``"write"`` or ``"none"`` (status endpoints). ``acl_empty`` is
    what a list endpoint answers when ACLs hide everything (Consul filters lists rather than
    refusing them); endpoints without it answer 403 instead.
    """

    handler: Handler
    access: str
    blocking: bool = False
    topics: TopicsFn | None = None
    acl_empty: Any = NO_ACL_EMPTY


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    endpoints: Mapping[str, Endpoint]
    prefix: bool = False


class Router:
    """Exact paths first, then the longest matching prefix (``/v1/kv/`` + key, ...)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, Route] = {}
        prefixes: list[Route] = []
        for route in routes:
            if route.prefix:
                prefixes.append(route)
            else:
                self._exact[route.path] = route
        self._prefixes = sorted(prefixes, key=lambda r: len(r.path), reverse=True)

    def match(self, path: str) -> tuple[Route, str] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, ""
        for route in self._prefixes:
            if path.startswith(route.path):
                return route, path[len(route.path) :]
        return None


def topics(*names: str) -> TopicsFn:
    """A ``TopicsFn`` for endpoints whose topics do not depend on the request."""
    fixed = frozenset(names)

    def fn(req: Request, ctx: Context) -> frozenset[str]:
        return fixed

    return fn


def check_datacenter(req: Request, ctx: Context) -> None:
    """``?dc=`` naming another datacenter fails like a server with no WAN path to it."""
    dc = req.param("dc")
    if dc and dc != ctx.identity.datacenter:
        raise HTTPError(500, "No path to datacenter")


def require_tail(req: Request, what: str) -> str:
    """The path parameter after the route prefix, or Consul's ``Missing <what>`` 400."""
    if not req.tail:
        raise HTTPError(400, f"Missing {what}")
    return req.tail


def body_fields(req: Request, where: str) -> Fields:
    """The JSON body as case-insensitive ``Fields``; bad JSON is Consul's decode-failed 400."""
    try:
        return Fields(decode_json_object(req.body), where)
    except DecodeError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None


def request_filter(req: Request, schema: Struct) -> Predicate | None:
    """Compile ``?filter=`` for this endpoint's schema (None when absent or empty)."""
    expression = req.param("filter")
    if not expression:
        return None
    try:
        return compile_filter(expression, schema)
    except FilterError as exc:
        raise HTTPError(400, f"Failed to create boolean expression evaluator: {exc}") from None


def parse_node_meta(req: Request) -> dict[str, str]:
    """``?node-meta=k:v`` (repeatable) into a dict, splitting at the first colon like Consul."""
    out: dict[str, str] = {}
    for item in req.params("node-meta"):
        key, _, value = item.partition(":")
        out[key] = value
    return out


def node_meta_matches(meta: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """True when the node has every requested ``key:value`` pair."""
    return all(meta.get(k) == v for k, v in wanted.items())
