"""The request pipeline as httpx transports: ``AsyncMeshPipeline`` and ``MeshPipeline``.

These are the mechanism; ``meshlib.AsyncMeshTransport`` / ``meshlib.MeshTransport`` (in
``client``) are the same classes configured from ``MeshConfig``. httpx documents transports as
its extension point, and httpx's own features (redirects, auth, event hooks, cookies) run above
them in ``Client.send``, so they keep working unchanged and each redirect hop is routed anew.

Pipeline, outer to inner (the order is deliberate; see docs/concepts.md):

1. addressing: a host that is not a mesh name goes to the pass-through transport untouched,
   with no mesh headers;
2. resolve: the service's endpoint set from discovery (no I/O after first use);
3. pick: one endpoint per attempt (P2C over Peak-EWMA by default), skipping dead ones;
4. load tracking: the attempt counts as in flight from send until the response stream closes;
5. URL rewrite to the endpoint's host:port (the ``Host`` header keeps the service name; for
   ``https`` the service name is the TLS server name), then the inner HTTP engine.

Only the thin ``handle_request`` drivers differ between sync and async; all decisions live in
the shared, I/O-free ``Router`` and ``Attempt``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpcore
import httpx

from meshlib.addressing import Addressing
from meshlib.attempt import Attempt, TrackedAsyncStream, TrackedSyncStream, endpoint_url
from meshlib.balancer import Balancer, make_balancer
from meshlib.classify import Classifier, default_classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.discovery.base import Discovery
from meshlib.discovery.static import StaticDiscovery
from meshlib.engine import AsyncEngine, SyncEngine
from meshlib.router import Router

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


class _PipelineBase:
    """Construction shared by both pipelines: router, classifier and inner transports.

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
        engine: str = "fast",
        transport: Any = None,
        passthrough: Any = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self._clock = clock or SYSTEM_CLOCK
        self._owns_discovery = discovery is None
        self.discovery = discovery if discovery is not None else StaticDiscovery(clock=self._clock)
        if isinstance(balancer, str):
            balancer = make_balancer(
                balancer, decay=ewma_decay, default_rtt=ewma_default_rtt, rng=rng
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
        )
        self._http_kw: dict[str, Any] = {
            "verify": verify,
            "cert": cert,
            "trust_env": trust_env,
            "limits": limits,
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


def _prepare(request: httpx.Request, attempt: Attempt, scheme_https: bool) -> None:
    """Point the request at the attempt's endpoint (step 5)."""
    ep = attempt.state.endpoint
    if scheme_https and "sni_hostname" not in request.extensions:
        request.extensions["sni_hostname"] = request.url.host
    request.url = endpoint_url(request.url, ep.host, ep.port)


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
        attempt = Attempt(router.pick(service), self._clock)
        _prepare(request, attempt, url.scheme == "https")
        try:
            response = await self._engine().handle_async_request(request)
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        except BaseException as exc:
            attempt.klass = self._classify(request, None, exc)
            attempt.finish()
            raise
        finally:
            request.url = url
        attempt.klass = self._classify(request, response, None)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = TrackedAsyncStream(response.stream, attempt)
        return response

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
        attempt = Attempt(router.pick(service), self._clock)
        _prepare(request, attempt, url.scheme == "https")
        try:
            response = self._engine().handle_request(request)
        except BaseException as exc:
            attempt.klass = self._classify(request, None, exc)
            attempt.finish()
            raise
        finally:
            request.url = url
        attempt.klass = self._classify(request, response, None)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = TrackedSyncStream(response.stream, attempt)
        return response

    def close(self) -> None:
        for t in self._closables():
            t.close()
        if self._owns_discovery:
            self.discovery.close()
