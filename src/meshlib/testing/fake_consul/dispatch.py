"""The request pipeline: faults, routing, ACLs, blocking queries and Consul's response headers.

Order matters and mirrors what a client would see from a real agent behind a flaky network:
an injected hang or failure comes first (before any state is touched), then routing (404/405),
Enterprise-only parameters, ACLs (403), and finally the handler. Blocking reads park on the
topics their endpoint declared and re-run when one of them changes, until the index moves past
``?index=`` or ``wait`` (plus up to wait/16 of jitter) runs out.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.traffic.durations import parse_go_duration

from .endpoint import NO_ACL_EMPTY, Context, Endpoint, Router
from .http11 import HttpConnection
from .state import TOPIC_ALL, TOPIC_RUNNABLE, TOPIC_TTL, StateError
from .wire import HTTPError, Request, Response, Result, encode_json, text_response

__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "Dispatcher",
    "Faults",
    "QueryOptions",
    "RecordedRequest",
    "parse_query_options",
]

_log = logging.getLogger(__name__)

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
# Consul's Index handler answers unknown paths with fmt.Fprintln, hence the newlines.
_NOT_FOUND = "Invalid URL path: not a recognized HTTP API endpoint\n"
_NOT_V1 = (
    "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n"
)
_ROOT = (
    "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent "
    "configuration and restart."
)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as FakeConsul saw it, for tests that assert on client behaviour."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """The blocking-query parameters of one read."""

    index: int
    wait: float
    consistency: str


def parse_query_options(req: Request) -> QueryOptions:
    """Consistency, then ``?wait`` and ``?index``, in the order and with the texts of Consul's
    ``parseConsistency`` and ``parseWait``."""
    stale, consistent = req.has("stale"), req.has("consistent")
    raw_stale = req.param("max_stale")
    if raw_stale:
        try:
            stale = stale or parse_go_duration(raw_stale) > 0
        except ValueError:
            raise HTTPError(400, f'Invalid max_stale value "{raw_stale}"') from None
    if stale and consistent:
        raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if req.has("cached") and consistent:
        raise HTTPError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
    wait = 0.0
    raw_wait = req.param("wait")
    if raw_wait:
        try:
            wait = parse_go_duration(raw_wait)
        except ValueError:
            raise HTTPError(400, "Invalid wait time") from None
    index = 0
    raw_index = req.param("index")
    if raw_index:
        if not raw_index.isdigit() or int(raw_index) >= 2**64:
            raise HTTPError(400, "Invalid index")
        index = int(raw_index)
    if wait <= 0:
        wait = DEFAULT_WAIT
    consistency = "stale" if stale else "consistent" if consistent else "leader"
    return QueryOptions(index=index, wait=min(wait, MAX_WAIT), consistency=consistency)


class Faults:
    """Fault-injection knobs, set from the test's thread and read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_status = 500
        self._fail_body = ""
        self.hanging = False
        self.latency = 0.0

    def fail_next(self, count: int, status: int, body: str) -> None:
        with self._lock:
            self._fail_left, self._fail_status, self._fail_body = count, status, body

    def take_failure(self) -> tuple[int, str] | None:
        with self._lock:
            if self._fail_left <= 0:
                return None
            self._fail_left -= 1
            return self._fail_status, self._fail_body


class Dispatcher:
    """Turns each parsed request into a response; owns the parked blocking queries."""

    def __init__(
        self,
        ctx: Context,
        router: Router,
        *,
        acl_tokens: dict[str, str] | None,
        default_acl_policy: str,
        rng: random.Random,
        faults: Faults,
    ) -> None:
        self.ctx = ctx
        self.router = router
        self.acl_tokens = acl_tokens
        self.acl_enabled = acl_tokens is not None or default_acl_policy == "deny"
        self.default_acl_policy = default_acl_policy if self.acl_enabled else "allow"
        self.rng = rng
        self.faults = faults
        self.requests: deque[RecordedRequest] = deque(maxlen=10_000)
        self.active_blocking = 0
        self.on_ttl_change: Callable[[], None] | None = None
        self.on_runnable_change: Callable[[], None] | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._all_waiters: set[asyncio.Future[None]] = set()

    # -------------------------------------------------------------- notifications

    def wake(self, topics: frozenset[str]) -> None:
        """Resolve the futures of blocking queries parked on any of ``topics`` (loop thread)."""
        if TOPIC_ALL in topics:
            targets: list[asyncio.Future[None]] = list(self._all_waiters)
        else:
            targets = [f for t in topics for f in self._waiters.get(t, ())]
        for fut in targets:
            if not fut.done():
                fut.set_result(None)
        if TOPIC_TTL in topics and self.on_ttl_change is not None:
            self.on_ttl_change()
        if TOPIC_RUNNABLE in topics and self.on_runnable_change is not None:
            self.on_runnable_change()

    async def _park(self, topics: frozenset[str], limit: float, conn: HttpConnection) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for topic in topics:
            self._waiters.setdefault(topic, set()).add(fut)
        self._all_waiters.add(fut)
        self.active_blocking += 1
        try:
            await asyncio.wait((fut, conn.closed), timeout=limit, return_when="FIRST_COMPLETED")
        finally:
            self.active_blocking -= 1
            self._all_waiters.discard(fut)
            for topic in topics:
                bucket = self._waiters.get(topic)
                if bucket is not None:
                    bucket.discard(fut)
                    if not bucket:
                        del self._waiters[topic]
            if not fut.done():
                fut.cancel()

    # ------------------------------------------------------------------- pipeline

    async def handle(self, req: Request, conn: HttpConnection) -> Response | None:
        """The whole pipeline; None means "drop the connection without answering"."""
        self.requests.append(
            RecordedRequest(req.method, req.path, dict(req.query), dict(req.headers), req.body)
        )
        while self.faults.hanging:
            if conn.closed.done():
                return None
            await asyncio.wait((conn.closed,), timeout=0.02)
        failure = self.faults.take_failure()
        if failure is not None:
            response = text_response(failure[0], failure[1])
        else:
            if self.faults.latency > 0:
                await asyncio.wait((conn.closed,), timeout=self.faults.latency)
            if conn.closed.done():
                return None
            self.ctx.state.run_due()
            try:
                routed = await self._route(req, conn)
            except HTTPError as exc:
                routed = text_response(exc.status, exc.message, exc.headers)
            except StateError as exc:
                routed = text_response(exc.status, exc.message)
            if routed is None:
                return None
            response = routed
        response.headers["X-Consul-Default-Acl-Policy"] = self.default_acl_policy
        return response

    async def _route(self, req: Request, conn: HttpConnection) -> Response | None:
        if req.path == "/":
            return text_response(200, _ROOT)
        if not req.path.startswith("/v1/"):
            return text_response(404, _NOT_FOUND if "/v1/" in req.path else _NOT_V1)
        found = self.router.match(req.path)
        if found is None:
            return text_response(404, _NOT_FOUND)
        route, req.tail = found
        allow = ",".join(["OPTIONS", *route.endpoints])
        if req.method == "OPTIONS":
            return Response(200, b"", {"Allow": allow})
        endpoint = route.endpoints.get(req.method)
        if endpoint is None:
            raise HTTPError(405, f"method {req.method} not allowed", {"Allow": allow})
        for param, feature in (("ns", "Namespaces"), ("partition", "Partitions")):
            value = req.param(param)
            if value and value != "default":
                raise HTTPError(
                    400,
                    f'Invalid query parameter: "{param}" - {feature} are a Consul Enterprise '
                    "feature",
                )
        filtered, token = self._authorize(req, endpoint)
        opts = parse_query_options(req) if endpoint.blocking else None
        result = await self._evaluate(req, endpoint, conn, opts)
        if result is None:
            return None
        if filtered:
            result.data = endpoint.acl_empty
            if token:  # Consul masks the flag for anonymous requests, to avoid leaking
                result.headers["X-Consul-Results-Filtered-By-Acls"] = "true"
        return self._encode(req, result, opts)

    def _authorize(self, req: Request, endpoint: Endpoint) -> tuple[bool, str]:
        """Apply ACLs; returns (answer with the list emptied?, token presented).

        Consul filters list reads rather than refusing them, and refuses object reads and
        every write with 403; an unknown token is refused everywhere.
        """
        token = req.param("token") or req.headers.get("x-consul-token", "")
        auth = req.headers.get("authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not self.acl_enabled or endpoint.access == "none":
            return False, token
        if token:
            policy = (self.acl_tokens or {}).get(token)
            if policy is None:
                raise HTTPError(403, "ACL not found")
        else:
            policy = "write" if self.default_acl_policy == "allow" else None
        if endpoint.access == "write":
            if policy != "write":
                raise HTTPError(403, "Permission denied")
            return False, token
        if policy in ("read", "write"):
            return False, token
        if endpoint.acl_empty is not NO_ACL_EMPTY:
            return True, token
        raise HTTPError(403, "Permission denied")

    def _compute(self, req: Request, endpoint: Endpoint) -> Result:
        with self.ctx.state.lock:
            return endpoint.handler(req, self.ctx)

    async def _evaluate(
        self, req: Request, endpoint: Endpoint, conn: HttpConnection, opts: QueryOptions | None
    ) -> Result | None:
        state = self.ctx.state
        # Taken before the first read, so a restore racing this request still releases it.
        generation = state.abandon_generation
        result = self._compute(req, endpoint)
        want_hash = req.param("hash") if endpoint.topics is not None and opts is None else None
        min_index = opts.index if opts is not None else 0
        if not min_index and not want_hash:
            return result
        wait = opts.wait if opts is not None else parse_query_options(req).wait
        timeout = wait + self.rng.random() * wait / 16
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def fresh(r: Result) -> bool:
            if r.status not in (200, 404):
                return True
            if want_hash:
                return r.content_hash != want_hash
            return max(r.index or 0, 1) > min_index

        while not fresh(result) and state.abandon_generation == generation:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            assert endpoint.topics is not None
            with state.lock:
                watched = endpoint.topics(req, self.ctx)
            await self._park(watched, remaining, conn)
            if conn.closed.done():
                return None
            result = self._compute(req, endpoint)
        return result

    def _encode(self, req: Request, result: Result, opts: QueryOptions | None) -> Response:
        headers: dict[str, str] = {}
        if opts is not None:
            headers["X-Consul-Effective-Consistency"] = opts.consistency
            headers["X-Consul-Index"] = str(max(result.index or 0, 1))
            headers["X-Consul-Knownleader"] = "true"
            headers["X-Consul-Lastcontact"] = "0"
        headers.update(result.headers)
        if result.raw is not None:
            headers["Content-Type"] = result.content_type
            return Response(result.status, result.raw, headers)
        if result.empty_body:
            return Response(result.status, b"", headers)
        headers["Content-Type"] = "application/json"
        headers["Vary"] = "Accept-Encoding"
        return Response(result.status, encode_json(result.data, pretty=req.has("pretty")), headers)
