"""The request pipeline as httpx transports: ``AsyncMeshPipeline`` and ``MeshPipeline``.

These are the mechanism; ``meshlib.AsyncMeshTransport`` / ``meshlib.MeshTransport`` (in
``client``) are the same classes configured from ``MeshConfig``. httpx documents transports as
its extension point, and httpx's own features (redirects, auth, event hooks, cookies) run above
them in ``Client.send``, so they keep working unchanged and each redirect hop is routed anew.

Pipeline, outer to inner (the order is deliberate; see docs/concepts.md):

0. addressing: a host that is not a mesh name goes to the pass-through transport untouched,
   with no mesh headers;
1. logical span (INTERNAL, ``mesh <service>``), so backoff, deadline expiry and "no
   endpoints" are visible;
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
8. attempt span (CLIENT) and its ``traceparent``; the deadline header;
9. URL rewrite to the endpoint's host:port (``Host`` keeps the service name; for ``https`` the
   service name is the TLS server name), then the inner HTTP engine.

Only these thin ``handle_request`` drivers differ between sync and async; every decision lives in
the shared, I/O-free ``Router``, ``Call`` and ``Attempt``; construction is in ``pipeline`` and
telemetry in ``observe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from meshlib.attempt import TrackedAsyncStream, TrackedSyncStream
from meshlib.call import Call
from meshlib.engine import AsyncEngine, SyncEngine
from meshlib.pipeline import (
    DEFAULT_LIMITS,
    PipelineBase,
    concurrency_error,
    mocking_active,
    prepare,
    restore,
)
from meshlib.replay import buffer_async, buffer_sync

__all__ = ["DEFAULT_LIMITS", "AsyncMeshPipeline", "MeshPipeline", "mocking_active"]


class AsyncMeshPipeline(PipelineBase, httpx.AsyncBaseTransport):
    """The async pipeline (see the module docstring for the order)."""

    _engine_cls = AsyncEngine
    _httpx_cls = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        router = self.router
        target = router.target(url.host)
        if target is None:
            with self._passthrough_scope(request) as scope:
                passed: httpx.Response = await self._passthrough.handle_async_request(request)
                scope.done(passed)
                return passed
        service = router.service(target) or await router.resolve(target)
        extensions = request.extensions
        headers = request.headers
        call = self._call(request, service)
        obs = self._observer.begin(call, url)
        release = None
        response: httpx.Response | None = None
        try:
            release = await self._enter_limits(call)
            if call.wants_replay:
                await buffer_async(request, call, self._settings.retry.max_replay_bytes)
            https = url.scheme == "https"
            engine = self._engine()
            native = isinstance(engine, self._engine_cls)
            prefetch = call.prefetch
            while True:
                request.extensions = dict(extensions)
                attempt = call.start_attempt()
                if obs is not None:
                    obs.attempt(attempt, request)
                prepare(request, attempt, https, native)
                try:
                    with self._suppress(engine):
                        response = await engine.handle_async_request(request)
                    if obs is not None:
                        obs.response(attempt, response)
                    delay = call.after_response(attempt, response, self._classify)
                    if delay is None:
                        assert isinstance(response.stream, httpx.AsyncByteStream)
                        tracked = TrackedAsyncStream(response.stream, attempt, call.body_expired)
                        response.stream = tracked
                        response.extensions["mesh"] = call.outcome(attempt)
                        if not prefetch:
                            attempt.after, release = release, None
                            return response
                        # The caller will read the whole body anyway: read it here, where a
                        # reset mid-body can still be retried.
                        await response.aread()
                        return response
                    await response.aclose()
                    attempt.finish()
                    response = None
                except asyncio.CancelledError:
                    attempt.cancel()
                    raise
                except Exception as exc:
                    response = None
                    if obs is not None:
                        obs.error(attempt, exc)
                    delay = call.after_error(attempt, exc, self._classify)
                    if delay is None:
                        err = call.give_up(exc)
                        raise err from err.__cause__
                finally:
                    restore(request, url, extensions, headers)
                if obs is not None:
                    obs.retrying(delay, call.reason)
                if delay > 0:
                    await self._clock.sleep(delay)
        except BaseException as exc:
            if obs is not None:
                obs.finish(None, exc)
                obs = None
            raise
        finally:
            if obs is not None:
                obs.finish(response, None)
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
            raise concurrency_error(call, conc)
        return conc.release

    async def aclose(self) -> None:
        self._metrics.close()
        for t in self._closables():
            await t.aclose()
        if self._owns_discovery:
            await self.discovery.aclose()


class MeshPipeline(PipelineBase, httpx.BaseTransport):
    """The sync pipeline: the same steps as ``AsyncMeshPipeline`` for WSGI services."""

    _engine_cls = SyncEngine
    _httpx_cls = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        router = self.router
        target = router.target(url.host)
        if target is None:
            with self._passthrough_scope(request) as scope:
                passed: httpx.Response = self._passthrough.handle_request(request)
                scope.done(passed)
                return passed
        service = router.service(target) or router.resolve_sync(target)
        extensions = request.extensions
        headers = request.headers
        call = self._call(request, service)
        obs = self._observer.begin(call, url)
        release = None
        response: httpx.Response | None = None
        try:
            release = self._enter_limits(call)
            if call.wants_replay:
                buffer_sync(request, call, self._settings.retry.max_replay_bytes)
            https = url.scheme == "https"
            engine = self._engine()
            native = isinstance(engine, self._engine_cls)
            prefetch = call.prefetch
            while True:
                request.extensions = dict(extensions)
                attempt = call.start_attempt()
                if obs is not None:
                    obs.attempt(attempt, request)
                prepare(request, attempt, https, native)
                try:
                    with self._suppress(engine):
                        response = engine.handle_request(request)
                    if obs is not None:
                        obs.response(attempt, response)
                    delay = call.after_response(attempt, response, self._classify)
                    if delay is None:
                        assert isinstance(response.stream, httpx.SyncByteStream)
                        tracked = TrackedSyncStream(response.stream, attempt, call.body_expired)
                        response.stream = tracked
                        response.extensions["mesh"] = call.outcome(attempt)
                        if not prefetch:
                            attempt.after, release = release, None
                            return response
                        response.read()
                        return response
                    response.close()
                    attempt.finish()
                    response = None
                except Exception as exc:
                    response = None
                    if obs is not None:
                        obs.error(attempt, exc)
                    delay = call.after_error(attempt, exc, self._classify)
                    if delay is None:
                        err = call.give_up(exc)
                        raise err from err.__cause__
                except BaseException:
                    attempt.cancel()
                    raise
                finally:
                    restore(request, url, extensions, headers)
                if obs is not None:
                    obs.retrying(delay, call.reason)
                if delay > 0:
                    self._clock.sleep_sync(delay)
        except BaseException as exc:
            if obs is not None:
                obs.finish(None, exc)
                obs = None
            raise
        finally:
            if obs is not None:
                obs.finish(response, None)
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
            raise concurrency_error(call, conc)
        return conc.release

    def close(self) -> None:
        self._metrics.close()
        for t in self._closables():
            t.close()
        if self._owns_discovery:
            self.discovery.close()
