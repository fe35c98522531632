"""Construction shared by both pipeline transports: router, policies, engines, limits.

``transport`` holds only the two thin drivers; everything they share is built here once: the
router (addressing + discovery + balancer + accrual), the call settings and per-service retry
budgets, the per-service limits, the telemetry observer, and the inner transports (meshlib's
engine for mesh endpoints, a stock httpx transport for pass-through hosts, and a stock one again
while a mocking library such as respx or pytest-httpx has patched httpx, so the mocks see every
attempt).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import httpcore
import httpx

from meshlib.accrual import AccrualPolicy, EndpointHealth
from meshlib.addressing import Addressing
from meshlib.attempt import Attempt, endpoint_url
from meshlib.balancer import Balancer, make_balancer
from meshlib.budget import BudgetPolicy, RetryBudget
from meshlib.call import Call, CallSettings
from meshlib.classify import Classifier, default_classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.discovery.base import Discovery, Target
from meshlib.discovery.static import StaticDiscovery
from meshlib.engine.http11 import ATTEMPT_HEADERS
from meshlib.errors import RateLimited
from meshlib.limits import ConcurrencyLimit, LimitPolicy, RateLimit
from meshlib.metrics import MeshMetrics
from meshlib.observe import Observer
from meshlib.retry import RetryPolicy
from meshlib.router import Router, ServiceState
from meshlib.state import snapshot
from meshlib.tracing import PassThroughSpan, Tracing, suppressed_http_instrumentation

__all__ = [
    "DEFAULT_LIMITS",
    "PipelineBase",
    "concurrency_error",
    "mocking_active",
    "prepare",
    "restore",
]

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


class PipelineBase:
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
        propagate_hosts: tuple[str, ...] = (),
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
        self._tracing = Tracing()
        self._metrics = MeshMetrics(self._gauges)
        self._observer = Observer(self._tracing, self._metrics)
        self._propagate_hosts = frozenset(h.lower() for h in propagate_hosts)
        self.router.on_breaker = self._on_breaker
        self.router.on_update = self._on_update

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

    def _gauges(self) -> list[tuple[str, int, int, float]]:
        """(service, healthy, ejected, staleness) per service, for the observable gauges."""
        out = []
        now = self._clock.now()
        for svc in self.router.services():
            ejected = sum(1 for st in svc.eps.states if not st.available(now))
            res = svc.resolution
            stale = max(0.0, now - res.updated_at) if res.stale else 0.0
            out.append((svc.target.service, len(svc.eps) - ejected, ejected, stale))
        return out

    def _on_breaker(self, target: Target, health: EndpointHealth, old: str, new: str) -> None:
        if self._metrics.enabled():
            self._metrics.breaker.add(
                1, {"mesh.service": target.service, "mesh.breaker.state": new}
            )

    def _on_update(self, target: Target) -> None:
        if self._metrics.enabled():
            self._metrics.discovery_updates.add(1, {"mesh.service": target.service})

    @staticmethod
    def _suppress(engine: Any) -> contextlib.AbstractContextManager[None]:
        """Around an attempt: keep httpx auto-instrumentation from adding a second CLIENT span
        when the inner transport is httpx's own (meshlib's engine is never instrumented)."""
        if isinstance(engine, httpx.AsyncHTTPTransport | httpx.HTTPTransport):
            return suppressed_http_instrumentation()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _passthrough_scope(self, request: httpx.Request) -> Iterator[PassThroughSpan]:
        """A pass-through request: one CLIENT span of our own, httpx's instrumentation
        suppressed, and trace context only for allow-listed hosts (``MESH_PROPAGATE_HOSTS``)."""
        with PassThroughSpan(
            self._tracing, request, request.url.host in self._propagate_hosts
        ) as s:
            yield s

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


def prepare(request: httpx.Request, attempt: Attempt, scheme_https: bool, native: bool) -> None:
    """Point the request at the attempt's endpoint and add the attempt's headers (steps 8-9).

    meshlib's engine takes the attempt's headers from an extension, so the caller's headers are
    never touched; any other inner transport (httpx's own under a mocking library, or a custom
    one) gets a copy of the headers with them set.
    """
    ep = attempt.state.endpoint
    extensions = request.extensions
    if scheme_https and "sni_hostname" not in extensions:
        extensions["sni_hostname"] = request.url.host
    extra = attempt.headers
    if extra:
        if native:
            extensions[ATTEMPT_HEADERS] = extra
        else:
            headers = request.headers.copy()
            for name, value in extra:
                headers[name] = value
            request.headers = headers
    request.url = endpoint_url(request.url, ep.host, ep.port)


def restore(
    request: httpx.Request, url: httpx.URL, extensions: dict[str, Any], headers: httpx.Headers
) -> None:
    """Undo the per-attempt changes, so nothing mesh-specific follows a redirect out of the mesh
    (httpx builds the next hop from this request, extensions and all) and the caller sees the
    logical URL and their own headers."""
    request.url = url
    request.extensions = extensions
    request.headers = headers


def concurrency_error(call: Call, limit: ConcurrencyLimit) -> RateLimited:
    return RateLimited(
        f"concurrency limit of {limit.limit} in-flight requests to mesh service "
        f"{str(call.service.target)!r} reached",
        request=call.request,
    )
