"""Construction shared by both pipeline transports: router, policies, inner transports, telemetry.

``drivers`` holds only the two thin loops; everything they share is built here once, from a
``PipelineSettings`` and the objects the pipeline talks to: the router (addressing + discovery +
balancer + accrual), the call settings and per-service retry budgets, admission (per-service
limits), the telemetry observer, and the inner transports: the one for mesh endpoints (meshlib's
engine, or any httpx transport), a stock httpx transport for pass-through hosts, and a stock one
again while a mocking library such as respx or pytest-httpx has patched httpx, so the mocks see
every attempt. The engine itself is chosen by ``meshlib.transport``; this layer never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from meshlib.accrual.health import EndpointHealth
from meshlib.balance.balancer import Balancer, make_balancer
from meshlib.classify import Classifier, default_classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.errors import ConfigError
from meshlib.extensions import ConnectPeer, ConnectPeers
from meshlib.once import build_once
from meshlib.otel import gate
from meshlib.pipeline.admission import Admission
from meshlib.pipeline.bound import HttpxAttempt, bound_pool
from meshlib.pipeline.call import Call, CallSettings
from meshlib.pipeline.hedging import Hedging
from meshlib.pipeline.mocking import mocking_active
from meshlib.pipeline.settings import PipelineSettings
from meshlib.retry.budget import RetryBudget
from meshlib.routing.addressing import Addressing
from meshlib.routing.router import Router, ServiceState
from meshlib.routing.snapshot import snapshot
from meshlib.scope.context import CallPolicy

if TYPE_CHECKING:
    from meshlib.pipeline.observe import Observer
    from meshlib.traffic.chain import Choice, Route

__all__ = ["PipelineBase"]

log = logging.getLogger("meshlib.hedging")


class PassScope(Protocol):
    """What a pass-through request reports its response to (``otel.PassThroughSpan``)."""

    def done(self, response: httpx.Response) -> httpx.Response: ...


class _NoSpan:
    """The pass-through scope while OpenTelemetry is not in use: nothing to record."""

    @staticmethod
    def done(response: httpx.Response) -> httpx.Response:
        return response


_NO_SPAN = _NoSpan()


class PipelineBase:
    """Construction shared by both pipelines (see the module docstring).

    ``inner`` carries mesh attempts; ``passthrough`` carries every other host; ``httpx_factory``
    builds httpx's own transport for the time a mocking library is active. Subclasses name the
    stream wrapper and whether they are the sync twin; everything else is written once.
    """

    tracked_stream: Callable[..., Any]
    _sync: bool

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        discovery: Discovery,
        inner: Any,
        passthrough: Any,
        httpx_factory: Callable[[], Any] | None = None,
        owns_discovery: bool = False,
        balancer: Balancer | None = None,
        classifier: Classifier | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        connect: ConnectPeers | None = None,
    ) -> None:
        self.settings = settings
        self._connect = connect
        self._clock = clock or SYSTEM_CLOCK
        self._rng = rng or random.Random()
        self._owns_discovery = owns_discovery
        self.discovery = discovery
        if balancer is None:
            balancer = make_balancer(
                settings.balancer,
                decay=settings.ewma_decay,
                default_rtt=settings.ewma_default_rtt,
                rng=self._rng,
            )
        self.classify: Classifier = classifier or default_classifier
        self.router = Router(
            discovery=discovery,
            balancer=balancer,
            clock=self._clock,
            addressing=Addressing(
                passthrough=settings.passthrough_hosts,
                declares=discovery.declares,
                consul_domain=settings.consul_domain,
            ),
            accrual=settings.accrual,
            rng=self._rng,
            locality=settings.locality,
        )
        self._call_settings = CallSettings(
            retry=settings.retry,
            timeout=settings.timeout,
            per_try_timeout=settings.per_try_timeout,
            idempotency_key=settings.idempotency_key,
            propagate_deadline=settings.propagate_deadline,
        )
        self._max_replay = settings.retry.max_replay_bytes
        self.budgets: dict[Target, RetryBudget] = {}
        self._budgets_lock = threading.Lock()
        self.deadline_exceeded: dict[Target, int] = {}
        """Calls per service that ended in ``DeadlineExceeded`` (for ``mesh_state()``)."""
        self.admission = Admission(settings.limits, self._clock)
        # Hedging is async-only (the sync driver never races attempts). A call's own
        # ``hedge=`` turns it on even for a service the configuration does not hedge.
        self.hedging: Hedging | None = (
            None if self._sync else Hedging(settings.hedges, settings.hedge_budget, self._clock)
        )
        if self._sync and settings.hedges:
            log.info(
                "hedged requests are configured for %s, but the sync MeshClient does not "
                "hedge; use AsyncMeshClient for them (docs/tail-latency.md)",
                ", ".join(sorted(settings.hedges)),
            )
        self._inner = inner
        self._native = bool(getattr(inner, "mesh_native", False))
        self._passthrough = passthrough
        self._httpx_factory = httpx_factory if self._native else None
        self._mock_inner: Any = None
        self._inner_httpx = self.is_httpx(inner)
        if self._inner_httpx:
            bound_pool(inner)
        # Telemetry is built once OpenTelemetry is in use in the process (``otel.gate``).
        self._observer: Observer | None = None
        self._tracing: Any = None
        self._metrics: Any = None
        self._telemetry_lock = threading.Lock()
        self._propagate_hosts = frozenset(h.lower() for h in settings.propagate_hosts)
        self._route_policies: dict[int, tuple[Route, CallPolicy | None]] = {}
        self.router.on_breaker = self._on_breaker
        self.router.on_update = self._on_update

    # -- what the drivers and the exchange ask for ------------------------------------------

    def engine(self) -> tuple[Any, bool, bool, bool]:
        """The inner transport for this call, whether it writes attempt headers itself,
        whether it is httpx's own (whose instrumentation must be suppressed), and whether a
        mocking library is behind it: httpx's own while one is active, so the mocks see every
        attempt."""
        if self._httpx_factory is not None and mocking_active(self._sync):
            if self._mock_inner is None:
                self._mock_inner = self._httpx_factory()
                bound_pool(self._mock_inner)
            return self._mock_inner, False, self.is_httpx(self._mock_inner), True
        return self._inner, self._native, self._inner_httpx, False

    def connect_peer(self, resolution: Resolution) -> ConnectPeer | None:
        """Who the endpoints must prove to be, when they are Consul Connect endpoints."""
        if not resolution.connect:
            return None
        if self._connect is None:
            raise ConfigError(
                f"discovery lists Connect endpoints for {str(resolution.target)!r} but this "
                "client has no Connect identity: set MESH_CONNECT=true (and MESH_SERVICE_NAME)"
            )
        return self._connect.peer(resolution.target.service)

    @staticmethod
    def is_httpx(transport: Any) -> bool:
        return isinstance(transport, httpx.AsyncHTTPTransport | httpx.HTTPTransport)

    @staticmethod
    def suppression(request: httpx.Request) -> contextlib.AbstractContextManager[None]:
        """Around an attempt over httpx's own transport: keep httpx auto-instrumentation from
        adding a second CLIENT span (meshlib's engine is never instrumented), and hold the
        attempt to its hard bound (``bound``; meshlib's engine does that itself)."""
        return HttpxAttempt(request)

    def plan(
        self, target: Target, request: httpx.Request
    ) -> tuple[ServiceState | None, Choice | None]:
        """The endpoint set for this request (None if discovery must be waited for) and, when
        the target's discovery chain applies, the chain's choice. No I/O."""
        router = self.router
        chain = router.chain(target)
        if chain is None:
            return router.service(target), None
        return router.chains.plan(chain, request)

    def _new_budget(self) -> RetryBudget:
        return RetryBudget(self.settings.budget, clock=self._clock)

    def call(
        self, request: httpx.Request, service: ServiceState, choice: Choice | None = None
    ) -> Call:
        target = service.target
        budget = self.budgets.get(target)
        if budget is None:  # one budget per service, however many threads call it first
            budget = build_once(self.budgets, target, self._budgets_lock, self._new_budget)
        route = choice.route if choice is not None else None
        if route is not None and route.timeout is None and route.retries is None:
            route = None  # nothing to override: skip the policy lookup
        return Call(
            router=self.router,
            service=service,
            request=request,
            settings=self._call_settings,
            budget=budget,
            rng=self._rng,
            choice=choice,
            route_policy=self._route_policy(route) if route is not None else None,
        )

    def _route_policy(self, route: Route) -> CallPolicy | None:
        """A route's timeout and retries as a ``CallPolicy``, built once per route version."""
        cached = self._route_policies.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        policy = None
        if route.timeout is not None or route.retries is not None:
            retries = None if route.retries is None else min(route.retries, 9)
            policy = CallPolicy(timeout=route.timeout, retries=retries)
        if len(self._route_policies) > 1024:
            self._route_policies.clear()
        self._route_policies[id(route)] = (route, policy)
        return policy

    def observer(self) -> Observer | None:
        """The call's telemetry entry point, or None while nothing in the process uses
        OpenTelemetry (then there is no SDK, span or instrumentation to report to)."""
        obs = self._observer
        if obs is None and gate.in_use():
            obs = self._start_telemetry()
        return obs

    def _start_telemetry(self) -> Observer:
        from meshlib.otel.metrics import MeshMetrics
        from meshlib.otel.tracing import Tracing
        from meshlib.pipeline.observe import Observer

        with self._telemetry_lock:
            if self._observer is None:
                self._tracing = Tracing()
                self._metrics = MeshMetrics(self._gauges, self._limits)
                self._observer = Observer(self._tracing, self._metrics)
            return self._observer

    @contextlib.contextmanager
    def passthrough_scope(self, request: httpx.Request) -> Iterator[PassScope]:
        """A pass-through request: one CLIENT span of our own, httpx's instrumentation
        suppressed, and trace context only for allow-listed hosts (``MESH_PROPAGATE_HOSTS``)."""
        if self.observer() is None:
            yield _NO_SPAN  # no OpenTelemetry: no span, no context to send
            return
        from meshlib.otel.tracing import PassThroughSpan

        with PassThroughSpan(
            self._tracing, request, request.url.host in self._propagate_hosts
        ) as s:
            yield s

    def mesh_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of services, endpoints, breakers and budgets."""
        deadlines = {
            "timeout_s": self.settings.timeout,
            "per_try_timeout_s": self.settings.per_try_timeout,
        }
        hedges = self.hedging.states if self.hedging is not None else {}
        return snapshot(
            self.router,
            self.budgets,
            self.admission.limits,
            deadlines,
            self.deadline_exceeded,
            hedges,
        )

    # -- lifecycle and telemetry hooks -------------------------------------------------------

    def _closables(self) -> list[Any]:
        found = [self._inner, self._passthrough]
        return found if self._mock_inner is None else [*found, self._mock_inner]

    def _gauges(self) -> list[tuple[str, int, int, float]]:
        """(service, healthy, ejected, staleness) per service, for the observable gauges.

        Staleness comes from the discovery itself: the router refreshes its copy only on a
        request, and during an outage there may be none."""
        out = []
        now = self._clock.now()
        discovery = self.router.discovery
        for svc in self.router.services():
            ejected = sum(1 for st in svc.eps.states if not st.available(now))
            res = discovery.current(svc.target) or svc.resolution
            stale = max(0.0, now - res.updated_at) if res.stale else 0.0
            out.append((svc.target.service, len(svc.eps) - ejected, ejected, stale))
        return out

    def _limits(self) -> list[tuple[str, int]]:
        """(service, adaptive limit) for the observable gauge."""
        return [
            (target.service, lim.adaptive.limit)
            for target, lim in list(self.admission.limits.items())
            if lim is not None and lim.adaptive is not None
        ]

    def _on_breaker(self, target: Target, health: EndpointHealth, old: str, new: str) -> None:
        m = self._metrics
        if m is not None and m.enabled():
            m.breaker.add(1, {"mesh.service": target.service, "mesh.breaker.state": new})

    def _on_update(self, target: Target) -> None:
        m = self._metrics
        if m is not None and m.enabled():
            m.discovery_updates.add(1, {"mesh.service": target.service})

    def _close_telemetry(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
