"""The two driver loops, ``AsyncMeshPipeline`` and ``MeshPipeline``: the same steps, one awaits.

Each loop only sends, awaits or blocks, and sleeps. Pass-through, admission, replay buffering,
dressing each attempt, judging its outcome and accepting the response are the shared helpers of
``PipelineBase`` and ``Exchange``, so the two loops read line for line alike; the decisions are
in the I/O-free ``Call`` and ``Attempt``. The order of the steps is in the package docstring.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from meshlib.discovery.base import Target
from meshlib.errors import not_under_asyncio
from meshlib.pipeline.attempt import (
    TrackedAsyncStream,
    TrackedSyncStream,
    read_whole,
    read_whole_sync,
)
from meshlib.pipeline.base import PipelineBase
from meshlib.pipeline.exchange import Exchange
from meshlib.retry.replay import buffer_async, buffer_sync
from meshlib.routing.router import ServiceState

if TYPE_CHECKING:
    from meshlib.pipeline.race import Race
    from meshlib.traffic.chain import Choice

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
        if not _in_asyncio():  # whatever the inner transport, limits and backoff need asyncio
            raise not_under_asyncio(str(target))
        service, choice = self.plan(target, request)
        if service is None:
            service, choice = await self._resolve(target, request)
        ex = Exchange(self, request, self.call(request, service, choice))
        response: httpx.Response | None = None
        try:
            ex.release = await self._admit(ex)
            if ex.call.wants_replay:
                ex.call.replayable = await buffer_async(request, self._max_replay)
            race = self._race(ex)
            while True:
                attempt = ex.begin()
                try:
                    if race is not None:
                        response = await race.run(attempt)
                        attempt = race.attempt or attempt
                    elif ex.suppress is None:
                        response = await ex.engine.handle_async_request(ex.sent)
                    else:
                        with ex.suppress:
                            response = await ex.engine.handle_async_request(ex.sent)
                    delay = ex.responded(attempt, response)
                    if delay is None:
                        if ex.accept(attempt, response):
                            if ex.suppress is None:
                                await read_whole(response)
                            else:
                                with ex.suppress:
                                    await read_whole(response)
                        return response
                    await response.aclose()
                    attempt.finish()
                    response = None
                except Exception as exc:
                    response = None
                    if race is not None:
                        attempt = race.attempt or attempt
                    delay = ex.failed(attempt, exc)
                except BaseException:
                    attempt.cancel()
                    raise
                finally:
                    race = None
                    ex.restore()
                if delay > 0:
                    await self._clock.sleep(delay)
        except BaseException as exc:
            ex.end(None, exc)
            raise
        finally:
            ex.end(response, None)

    async def _resolve(
        self, target: Target, request: httpx.Request
    ) -> tuple[ServiceState, Choice | None]:
        """First use: wait for discovery (endpoints, then the chain), then plan again."""
        router = self.router
        chain = router.chain(target)
        if chain is None:
            service = await router.resolve(target)
            chain = router.chain(target)
            if chain is None:
                return service, None
        choice = router.chains.choose(chain, request)
        return await router.chains.resolve(choice), choice

    def _race(self, ex: Exchange) -> Race | None:
        """The hedged race for this call's first attempt, or None when it is not hedged."""
        hedging = self.hedging
        if hedging is None:
            return None
        policy = hedging.policy(ex.call)
        if policy is None:
            return None
        state = hedging.state(ex.call.service.target, policy)
        state.budget.deposit()
        ex.hedge = state
        delay = hedging.delay(policy, state)
        if delay is None or len(ex.call.service.eps.states) < 2:
            return None
        from meshlib.pipeline.race import Race  # asyncio's tasks, only for a hedged service

        return Race(self, ex, state, delay, self._clock)

    async def _admit(self, ex: Exchange) -> Callable[[], None] | None:
        call = ex.call
        ticket = self.admission.enter(call)
        if ticket is None:
            return None
        ex.permit = ticket.permit
        try:
            if ticket.wait > 0:
                await self._clock.sleep(ticket.wait)
            slot = ticket.slot
            if slot is not None and not await slot.acquire(ticket.slot_wait):
                raise self.admission.refused(call, slot)
        except BaseException:
            ticket.abandon()
            raise
        return ticket.release(slot is not None)

    async def aclose(self) -> None:
        self._close_telemetry()
        for t in self._closables():
            await t.aclose()
        if self._owns_discovery:
            await self.discovery.aclose()


class MeshPipeline(PipelineBase, httpx.BaseTransport):
    """The sync pipeline: the same steps as ``AsyncMeshPipeline`` for WSGI services.

    It never hedges: a backup would need a second thread per call and a way to abandon a
    blocking send part-way, and the sync engine has neither (docs/hedging.md)."""

    tracked_stream = TrackedSyncStream
    _sync = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        router = self.router
        target = router.target(request.url.host)
        if target is None:
            with self.passthrough_scope(request) as scope:
                passed: httpx.Response = self._passthrough.handle_request(request)
                return scope.done(passed)
        service, choice = self.plan(target, request)
        if service is None:
            service, choice = self._resolve(target, request)
        ex = Exchange(self, request, self.call(request, service, choice))
        response: httpx.Response | None = None
        try:
            ex.release = self._admit(ex)
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
                                read_whole_sync(response)
                            else:
                                with ex.suppress:
                                    read_whole_sync(response)
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

    def _resolve(
        self, target: Target, request: httpx.Request
    ) -> tuple[ServiceState, Choice | None]:
        """First use: wait for discovery (endpoints, then the chain), then plan again."""
        router = self.router
        chain = router.chain(target)
        if chain is None:
            service = router.resolve_sync(target)
            chain = router.chain(target)
            if chain is None:
                return service, None
        choice = router.chains.choose(chain, request)
        return router.chains.resolve_sync(choice), choice

    def _admit(self, ex: Exchange) -> Callable[[], None] | None:
        call = ex.call
        ticket = self.admission.enter(call)
        if ticket is None:
            return None
        ex.permit = ticket.permit
        try:
            if ticket.wait > 0:
                self._clock.sleep_sync(ticket.wait)
            slot = ticket.slot
            if slot is not None and not slot.acquire_sync(ticket.slot_wait):
                raise self.admission.refused(call, slot)
        except BaseException:
            ticket.abandon()
            raise
        return ticket.release(slot is not None)

    def close(self) -> None:
        self._close_telemetry()
        for t in self._closables():
            t.close()
        if self._owns_discovery:
            self.discovery.close()


def _in_asyncio() -> bool:
    """Whether an asyncio loop runs this task (without importing asyncio for the answer: a
    process that never imported it runs under something else, trio say)."""
    aio = sys.modules.get("asyncio")
    return aio is not None and aio._get_running_loop() is not None
