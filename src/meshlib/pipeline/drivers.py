"""The two driver loops, ``AsyncMeshPipeline`` and ``MeshPipeline``: the same steps, one awaits.

Each loop only sends, awaits or blocks, and sleeps. Pass-through, admission, replay buffering,
dressing each attempt, judging its outcome and accepting the response are the shared helpers of
``PipelineBase`` and ``Exchange``, so the two loops read line for line alike; the decisions are
in the I/O-free ``Call`` and ``Attempt``. The order of the steps is in the package docstring.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from meshlib.pipeline.attempt import TrackedAsyncStream, TrackedSyncStream
from meshlib.pipeline.base import PipelineBase
from meshlib.pipeline.call import Call
from meshlib.pipeline.exchange import Exchange
from meshlib.retry.replay import buffer_async, buffer_sync

__all__ = ["AsyncMeshPipeline", "MeshPipeline"]


class AsyncMeshPipeline(PipelineBase, httpx.AsyncBaseTransport):
    """The async pipeline."""

    tracked_stream = TrackedAsyncStream
    _sync = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        router = self.router
        target = router.target(request.url.host)
        if target is None:
            with self.passthrough_scope(request) as scope:
                passed: httpx.Response = await self._passthrough.handle_async_request(request)
                return scope.done(passed)
        service = router.service(target) or await router.resolve(target)
        ex = Exchange(self, request, self.call(request, service))
        response: httpx.Response | None = None
        try:
            ex.release = await self._admit(ex.call)
            if ex.call.wants_replay:
                ex.call.replayable = await buffer_async(request, self._max_replay)
            while True:
                attempt = ex.begin()
                try:
                    if ex.suppress is None:
                        response = await ex.engine.handle_async_request(ex.sent)
                    else:
                        with ex.suppress:
                            response = await ex.engine.handle_async_request(ex.sent)
                    delay = ex.responded(attempt, response)
                    if delay is None:
                        if ex.accept(attempt, response):
                            if ex.suppress is None:
                                await response.aread()
                            else:
                                with ex.suppress:
                                    await response.aread()
                        return response
                    await response.aclose()
                    attempt.finish()
                    response = None
                except Exception as exc:
                    response = None
                    delay = ex.failed(attempt, exc)
                except BaseException:
                    attempt.cancel()
                    raise
                finally:
                    ex.restore()
                if delay > 0:
                    await self._clock.sleep(delay)
        except BaseException as exc:
            ex.end(None, exc)
            raise
        finally:
            ex.end(response, None)

    async def _admit(self, call: Call) -> Callable[[], None] | None:
        ticket = self.admission.enter(call)
        if ticket is None:
            return None
        if ticket.wait > 0:
            await self._clock.sleep(ticket.wait)
        slot = ticket.slot
        if slot is None:
            return None
        if not await slot.acquire(ticket.slot_wait):
            raise self.admission.refused(call, slot)
        return slot.release

    async def aclose(self) -> None:
        self._close_telemetry()
        for t in self._closables():
            await t.aclose()
        if self._owns_discovery:
            await self.discovery.aclose()


class MeshPipeline(PipelineBase, httpx.BaseTransport):
    """The sync pipeline: the same steps as ``AsyncMeshPipeline`` for WSGI services."""

    tracked_stream = TrackedSyncStream
    _sync = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        router = self.router
        target = router.target(request.url.host)
        if target is None:
            with self.passthrough_scope(request) as scope:
                passed: httpx.Response = self._passthrough.handle_request(request)
                return scope.done(passed)
        service = router.service(target) or router.resolve_sync(target)
        ex = Exchange(self, request, self.call(request, service))
        response: httpx.Response | None = None
        try:
            ex.release = self._admit(ex.call)
            if ex.call.wants_replay:
                ex.call.replayable = buffer_sync(request, self._max_replay)
            while True:
                attempt = ex.begin()
                try:
                    if ex.suppress is None:
                        response = ex.engine.handle_request(ex.sent)
                    else:
                        with ex.suppress:
                            response = ex.engine.handle_request(ex.sent)
                    delay = ex.responded(attempt, response)
                    if delay is None:
                        if ex.accept(attempt, response):
                            if ex.suppress is None:
                                response.read()
                            else:
                                with ex.suppress:
                                    response.read()
                        return response
                    response.close()
                    attempt.finish()
                    response = None
                except Exception as exc:
                    response = None
                    delay = ex.failed(attempt, exc)
                except BaseException:
                    attempt.cancel()
                    raise
                finally:
                    ex.restore()
                if delay > 0:
                    self._clock.sleep_sync(delay)
        except BaseException as exc:
            ex.end(None, exc)
            raise
        finally:
            ex.end(response, None)

    def _admit(self, call: Call) -> Callable[[], None] | None:
        ticket = self.admission.enter(call)
        if ticket is None:
            return None
        if ticket.wait > 0:
            self._clock.sleep_sync(ticket.wait)
        slot = ticket.slot
        if slot is None:
            return None
        if not slot.acquire_sync(ticket.slot_wait):
            raise self.admission.refused(call, slot)
        return slot.release

    def close(self) -> None:
        self._close_telemetry()
        for t in self._closables():
            t.close()
        if self._owns_discovery:
            self.discovery.close()
