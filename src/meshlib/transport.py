"""The request pipeline as httpx transports: ``AsyncMeshPipeline`` and ``MeshPipeline``.

These are the mechanism; ``meshlib.AsyncMeshTransport`` / ``meshlib.MeshTransport`` (in
``client``) are the same classes configured from ``MeshConfig``. httpx documents transports as
its extension point, and httpx's own features (redirects, auth, event hooks, cookies) run above
them in ``Client.send``, so they keep working unchanged and each redirect hop is routed anew.

Pipeline, outer to inner (the order is deliberate; see docs/concepts.md):

0. addressing: a host that is not a mesh name goes to the pass-through transport untouched,
   with no mesh headers;
1. (logical span: arrives with tracing);
2. total deadline (config, ``@outbound``, ``extensions={"mesh": ...}`` or the incoming
   request's), above the retries so retries never outlive the caller; then the per-service rate
   and concurrency limits, which may wait only within that deadline;
3. retry loop (``call.Call``): budget deposit per call, withdrawal per retry or requeue,
   jittered backoff capped by the time left, ``Retry-After`` honoured; failures before the
   request was sent are requeued on another endpoint for any method, failures after it only for
   idempotent calls with a replayable body;
4. resolve + pick inside the loop, so a retry goes to a different endpoint, skipping endpoints
   whose breaker is open before an attempt is spent on them;
5. failure accrual records each attempt's classified outcome;
6. load tracking: in flight from send until the response stream closes;
7. per-try timeout (httpx's timeouts, capped by the per-try timeout and the time left), under
   accrual so that a timeout counts against the endpoint;
8. (attempt span and ``traceparent``: arrive with tracing); the deadline header;
9. URL rewrite to the endpoint's host:port (``Host`` keeps the service name; for ``https`` the
   service name is the TLS server name), then the inner HTTP engine.

Only the thin ``handle_request`` drivers differ between sync and async; every decision lives in
the shared, I/O-free ``Router``, ``Call`` and ``Attempt``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import httpcore
import httpx

from meshlib.accrual import AccrualPolicy
from meshlib.addressing import Addressing
from meshlib.attempt import Attempt, TrackedAsyncStream, TrackedSyncStream, endpoint_url
from meshlib.balancer import Balancer, make_balancer
from meshlib.budget import BudgetPolicy, RetryBudget
from meshlib.call import Call, CallSettings
from meshlib.classify import Classifier, default_classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.context import DEADLINE_HEADER
from meshlib.discovery.base import Discovery, Target
from meshlib.discovery.static import StaticDiscovery
from meshlib.engine import AsyncEngine, SyncEngine
from meshlib.errors import RateLimited
from meshlib.limits import ConcurrencyLimit, LimitPolicy, RateLimit
from meshlib.retry import RetryPolicy
from meshlib.router import Router, ServiceState
from meshlib.state import snapshot

__all__ = ["DEFAULT_LIMITS", "AsyncMeshPipeline", "MeshPipeline", "mocking_active"]

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def mocking_active(sync: bool) -> bool:
    """True while respx, pytest-httpx or similar have replaced httpx's or httpcore's transports.

    Those libraries patch *below* a wrapping transport. When they are active, mesh attempts are
    sent through httpx's own transport so the mocks see every attempt (with the endpoint's
    URL); otherwise meshlib's faster engine would bypass them.
    """
    if sync:
        a: object = httpx.HTTPTransport.handle_request
        b: object = httpcore.ConnectionPool.handle_request
    else:
        a = httpx.AsyncHTTPTransport.handle_async_request
        b = httpcore.AsyncConnectionPool.handle_async_request
    return not (
        getattr(a, "__module__", "").startswith("httpx.")
        and getattr(b, "__module__", "").startswith("httpcore.")
    )


class _Limits:
    """One service's rate and concurrency limits."""

    __slots__ = ("concurrency", "policy", "rate")

    def __init__(self, policy: LimitPolicy, clock: Clock) -> None:
        self.policy = policy
        self.rate = RateLimit(policy.rate, policy.burst, clock) if policy.rate else None
        self.concurrency = (
            ConcurrencyLimit(policy.max_in_flight, policy.max_waiters)
            if policy.max_in_flight
            else None
        )


class _PipelineBase:
    """Construction shared by both pipelines: router, policies and inner transports.

    Subclasses name their engine classes; everything else is identical, so it is written once.
    """

    _engine_cls: type[Any]
    _httpx_cls: type[Any]

    def __init__(
        self,
        *,
        discovery: Discovery | None = None,
        balancer: str | Balancer = "p2c-peak-ewma",
        classifier: Classifier | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        ewma_decay: float = 10.0,
        ewma_default_rtt: float = 0.030,
        passthrough_hosts: tuple[str, ...] = (),
        consul_domain: str = "consul",
        retry: RetryPolicy | None = None,
        budget: BudgetPolicy | None = None,
        accrual: AccrualPolicy | None = None,
        timeout: float | None = None,
        per_try_timeout: float | None = None,
        idempotency_key: bool = False,
        propagate_deadline: bool = True,
        limits: Mapping[str, LimitPolicy] | None = None,
        engine: str = "fast",
        transport: Any = None,
        passthrough: Any = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits_http: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self._clock = clock or SYSTEM_CLOCK
        self._rng = rng or random.Random()
        self._owns_discovery = discovery is None
        self.discovery = discovery if discovery is not None else StaticDiscovery(clock=self._clock)
        if isinstance(balancer, str):
            balancer = make_balancer(
                balancer, decay=ewma_decay, default_rtt=ewma_default_rtt, rng=self._rng
            )
        self._classify = classifier or default_classifier
        self.router = Router(
            discovery=self.discovery,
            balancer=balancer,
            clock=self._clock,
            addressing=Addressing(
                passthrough=passthrough_hosts,
                declares=self.discovery.declares,
                consul_domain=consul_domain,
            ),
            accrual=accrual,
            rng=self._rng,
        )
        self._settings = CallSettings(
            retry=retry or RetryPolicy(),
            timeout=timeout,
            per_try_timeout=per_try_timeout,
            idempotency_key=idempotency_key,
            propagate_deadline=propagate_deadline,
        )
        self._budget_policy = budget or BudgetPolicy()
        self.budgets: dict[Target, RetryBudget] = {}
        self._limit_policies = dict(limits or {})
        self._limits: dict[Target, _Limits | None] = {}
        self._http_kw: dict[str, Any] = {
            "verify": verify,
            "cert": cert,
            "trust_env": trust_env,
            "limits": limits_http,
        }
        self._fast = transport is None and engine == "fast"
        if transport is not None:
            self._inner = transport
        elif self._fast:
            self._inner = self._engine_cls(**self._http_kw)
        else:
            self._inner = self._httpx_cls(**self._http_kw)
        self._passthrough = passthrough or self._httpx_cls(**self._http_kw)
        self._mock_inner: Any = None

    def _engine(self) -> Any:
        """The inner transport for this attempt: httpx's own while a mocking library is active."""
        if self._fast and mocking_active(sync=self._httpx_cls is httpx.HTTPTransport):
            if self._mock_inner is None:
                self._mock_inner = self._httpx_cls(**self._http_kw)
            return self._mock_inner
        return self._inner

    def _closables(self) -> list[Any]:
        found = [self._inner, self._passthrough]
        return found if self._mock_inner is None else [*found, self._mock_inner]

    def mesh_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of services, endpoints, breakers and budgets."""
        return snapshot(self.router, self.budgets, self._limits)

    def _call(self, request: httpx.Request, service: ServiceState) -> Call:
        target = service.target
        budget = self.budgets.get(target)
        if budget is None:
            budget = self.budgets[target] = RetryBudget(self._budget_policy, clock=self._clock)
        return Call(
            router=self.router,
            service=service,
            request=request,
            settings=self._settings,
            budget=budget,
            rng=self._rng,
        )

    def _limits_for(self, target: Target) -> _Limits | None:
        try:
            return self._limits[target]
        except KeyError:
            policy = self._limit_policies.get(target.service)
            lim = _Limits(policy, self._clock) if policy is not None else None
            self._limits[target] = lim
            return lim

    def _limit_wait(self, lim: _Limits, call: Call) -> float:
        """How long this call may wait for a limit: 0 to fail fast, else bounded."""
        wait = lim.policy.wait
        if call.policy is not None and call.policy.limit_wait is not None:
            wait = call.policy.limit_wait
        if not wait:
            return 0.0
        remaining = call.remaining()
        return lim.policy.max_wait if remaining is None else max(0.0, remaining)

    def _rate_wait(self, lim: _Limits, call: Call, budget: float) -> float:
        if lim.rate is None:
            return 0.0
        wait = lim.rate.reserve(budget)
        if wait is None:
            raise RateLimited(
                f"rate limit of {lim.rate.rate:g}/s for mesh service "
                f"{str(call.service.target)!r} reached",
                request=call.request,
            )
        return wait


def _prepare(request: httpx.Request, attempt: Attempt, scheme_https: bool) -> None:
    """Point the request at the attempt's endpoint (step 9)."""
    ep = attempt.state.endpoint
    if scheme_https and "sni_hostname" not in request.extensions:
        request.extensions["sni_hostname"] = request.url.host
    request.url = endpoint_url(request.url, ep.host, ep.port)


def _restore(request: httpx.Request, url: httpx.URL, extensions: dict[str, Any]) -> None:
    """Undo the per-attempt changes, so nothing mesh-specific follows a redirect out of the mesh
    (httpx builds the next hop from this request, extensions and all) and the caller sees the
    logical URL."""
    request.url = url
    request.extensions = extensions
    headers = request.headers
    if DEADLINE_HEADER in headers:
        del headers[DEADLINE_HEADER]


def _concurrency_error(call: Call, limit: ConcurrencyLimit) -> RateLimited:
    return RateLimited(
        f"concurrency limit of {limit.limit} in-flight requests to mesh service "
        f"{str(call.service.target)!r} reached",
        request=call.request,
    )


def _use_buffer(request: httpx.Request, call: Call, chunks: list[bytes]) -> None:
    """The body fitted under the replay cap: make it a replayable, length-framed body."""
    body = b"".join(chunks)
    request.stream = httpx.ByteStream(body)
    request.headers.pop("transfer-encoding", None)
    request.headers["content-length"] = str(len(body))
    call.replayable = True


class _PrefixedAsync(httpx.AsyncByteStream):
    """A one-shot body: the chunks already read, then the rest of the original stream."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk


class _PrefixedSync(httpx.SyncByteStream):
    """Sync twin of ``_PrefixedAsync``."""

    def __init__(self, head: list[bytes], rest: Iterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._rest


class AsyncMeshPipeline(_PipelineBase, httpx.AsyncBaseTransport):
    """The async pipeline (see the module docstring for the order)."""

    _engine_cls = AsyncEngine
    _httpx_cls = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        router = self.router
        target = router.target(url.host)
        if target is None:
            response: httpx.Response = await self._passthrough.handle_async_request(request)
            return response
        service = router.service(target) or await router.resolve(target)
        extensions = request.extensions
        request.extensions = dict(extensions)
        call = self._call(request, service)
        release = await self._enter_limits(call)
        try:
            if call.wants_replay:
                await self._buffer(request, call)
            https = url.scheme == "https"
            engine = self._engine()
            prefetch = call.prefetch
            while True:
                attempt = call.start_attempt()
                _prepare(request, attempt, https)
                try:
                    response = await engine.handle_async_request(request)
                    delay = call.after_response(attempt, response, self._classify)
                    if delay is None:
                        assert isinstance(response.stream, httpx.AsyncByteStream)
                        tracked = TrackedAsyncStream(response.stream, attempt, call.body_expired)
                        response.stream = tracked
                        if not prefetch:
                            attempt.after, release = release, None
                            return response
                        # The caller will read the whole body anyway: read it here, where a
                        # reset mid-body can still be retried.
                        await response.aread()
                        return response
                    await response.aclose()
                    attempt.finish()
                except asyncio.CancelledError:
                    attempt.cancel()
                    raise
                except Exception as exc:
                    delay = call.after_error(attempt, exc, self._classify)
                    if delay is None:
                        err = call.give_up(exc)
                        raise err from err.__cause__
                finally:
                    _restore(request, url, extensions)
                if delay > 0:
                    await self._clock.sleep(delay)
        finally:
            if release is not None:
                release()

    async def _enter_limits(self, call: Call) -> Callable[[], None] | None:
        lim = self._limits_for(call.service.target)
        if lim is None:
            return None
        budget = self._limit_wait(lim, call)
        wait = self._rate_wait(lim, call, budget)
        if wait > 0:
            await self._clock.sleep(wait)
        conc = lim.concurrency
        if conc is None:
            return None
        if not await conc.acquire(max(0.0, budget - wait)):
            raise _concurrency_error(call, conc)
        return conc.release

    async def _buffer(self, request: httpx.Request, call: Call) -> None:
        cap = self._settings.retry.max_replay_bytes
        chunks: list[bytes] = []
        size = 0
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        it = stream.__aiter__()
        async for chunk in it:
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                request.stream = _PrefixedAsync(chunks, it)
                return
        _use_buffer(request, call, chunks)

    async def aclose(self) -> None:
        for t in self._closables():
            await t.aclose()
        if self._owns_discovery:
            await self.discovery.aclose()


class MeshPipeline(_PipelineBase, httpx.BaseTransport):
    """The sync pipeline: the same steps as ``AsyncMeshPipeline`` for WSGI services."""

    _engine_cls = SyncEngine
    _httpx_cls = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        router = self.router
        target = router.target(url.host)
        if target is None:
            response: httpx.Response = self._passthrough.handle_request(request)
            return response
        service = router.service(target) or router.resolve_sync(target)
        extensions = request.extensions
        request.extensions = dict(extensions)
        call = self._call(request, service)
        release = self._enter_limits(call)
        try:
            if call.wants_replay:
                self._buffer(request, call)
            https = url.scheme == "https"
            engine = self._engine()
            prefetch = call.prefetch
            while True:
                attempt = call.start_attempt()
                _prepare(request, attempt, https)
                try:
                    response = engine.handle_request(request)
                    delay = call.after_response(attempt, response, self._classify)
                    if delay is None:
                        assert isinstance(response.stream, httpx.SyncByteStream)
                        tracked = TrackedSyncStream(response.stream, attempt, call.body_expired)
                        response.stream = tracked
                        if not prefetch:
                            attempt.after, release = release, None
                            return response
                        response.read()
                        return response
                    response.close()
                    attempt.finish()
                except Exception as exc:
                    delay = call.after_error(attempt, exc, self._classify)
                    if delay is None:
                        err = call.give_up(exc)
                        raise err from err.__cause__
                except BaseException:
                    attempt.cancel()
                    raise
                finally:
                    _restore(request, url, extensions)
                if delay > 0:
                    self._clock.sleep_sync(delay)
        finally:
            if release is not None:
                release()

    def _enter_limits(self, call: Call) -> Callable[[], None] | None:
        lim = self._limits_for(call.service.target)
        if lim is None:
            return None
        budget = self._limit_wait(lim, call)
        wait = self._rate_wait(lim, call, budget)
        if wait > 0:
            self._clock.sleep_sync(wait)
        conc = lim.concurrency
        if conc is None:
            return None
        if not conc.acquire_sync(max(0.0, budget - wait)):
            raise _concurrency_error(call, conc)
        return conc.release

    def _buffer(self, request: httpx.Request, call: Call) -> None:
        cap = self._settings.retry.max_replay_bytes
        chunks: list[bytes] = []
        size = 0
        stream = request.stream
        assert isinstance(stream, Iterable)
        it = iter(stream)
        for chunk in it:
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                request.stream = _PrefixedSync(chunks, it)
                return
        _use_buffer(request, call, chunks)

    def close(self) -> None:
        for t in self._closables():
            t.close()
        if self._owns_discovery:
            self.discovery.close()
