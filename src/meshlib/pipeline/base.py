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
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from meshlib.accrual.health import EndpointHealth
from meshlib.balance.balancer import Balancer, make_balancer
from meshlib.classify import Classifier, default_classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.discovery.base import Discovery, Target
from meshlib.otel.metrics import MeshMetrics
from meshlib.otel.tracing import PassThroughSpan, SuppressedHTTP, Tracing
from meshlib.pipeline.admission import Admission
from meshlib.pipeline.call import Call, CallSettings
from meshlib.pipeline.hedging import Hedging
from meshlib.pipeline.mocking import mocking_active
from meshlib.pipeline.observe import Observer
from meshlib.pipeline.settings import PipelineSettings
from meshlib.retry.budget import RetryBudget
from meshlib.routing.addressing import Addressing
from meshlib.routing.router import Router, ServiceState
from meshlib.routing.snapshot import snapshot

__all__ = ["PipelineBase"]

log = logging.getLogger("meshlib.hedging")


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
    ) -> None:
        self.settings = settings
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
        self._tracing = Tracing()
        self._metrics = MeshMetrics(self._gauges, self._limits)
        self.observer = Observer(self._tracing, self._metrics)
        self._propagate_hosts = frozenset(h.lower() for h in settings.propagate_hosts)
        self.router.on_breaker = self._on_breaker
        self.router.on_update = self._on_update

    # -- what the drivers and the exchange ask for ------------------------------------------

    def engine(self) -> tuple[Any, bool, bool]:
        """The inner transport for this call, whether it writes attempt headers itself, and
        whether it is httpx's own (whose instrumentation must be suppressed): httpx's own
        while a mocking library is active, so the mocks see every attempt."""
        if self._httpx_factory is not None and mocking_active(self._sync):
            if self._mock_inner is None:
                self._mock_inner = self._httpx_factory()
            return self._mock_inner, False, self.is_httpx(self._mock_inner)
        return self._inner, self._native, self._inner_httpx

    @staticmethod
    def is_httpx(transport: Any) -> bool:
        return isinstance(transport, httpx.AsyncHTTPTransport | httpx.HTTPTransport)

    @staticmethod
    def suppression() -> contextlib.AbstractContextManager[None]:
        """Around an attempt over httpx's own transport: keep httpx auto-instrumentation from
        adding a second CLIENT span (meshlib's engine is never instrumented)."""
        return SuppressedHTTP()

    def call(self, request: httpx.Request, service: ServiceState) -> Call:
        target = service.target
        budget = self.budgets.get(target)
        if budget is None:
            budget = self.budgets[target] = RetryBudget(self.settings.budget, clock=self._clock)
        return Call(
            router=self.router,
            service=service,
            request=request,
            settings=self._call_settings,
            budget=budget,
            rng=self._rng,
        )

    @contextlib.contextmanager
    def passthrough_scope(self, request: httpx.Request) -> Iterator[PassThroughSpan]:
        """A pass-through request: one CLIENT span of our own, httpx's instrumentation
        suppressed, and trace context only for allow-listed hosts (``MESH_PROPAGATE_HOSTS``)."""
        with PassThroughSpan(
            self._tracing, request, request.url.host in self._propagate_hosts
        ) as s:
            yield s

    def mesh_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of services, endpoints, breakers and budgets."""
        hedges = self.hedging.states if self.hedging is not None else {}
        return snapshot(self.router, self.budgets, self.admission.limits, hedges)

    # -- lifecycle and telemetry hooks -------------------------------------------------------

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

    def _limits(self) -> list[tuple[str, int]]:
        """(service, adaptive limit) for the observable gauge."""
        return [
            (target.service, lim.adaptive.limit)
            for target, lim in list(self.admission.limits.items())
            if lim is not None and lim.adaptive is not None
        ]

    def _on_breaker(self, target: Target, health: EndpointHealth, old: str, new: str) -> None:
        if self._metrics.enabled():
            self._metrics.breaker.add(
                1, {"mesh.service": target.service, "mesh.breaker.state": new}
            )

    def _on_update(self, target: Target) -> None:
        if self._metrics.enabled():
            self._metrics.discovery_updates.add(1, {"mesh.service": target.service})
