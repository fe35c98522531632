"""The hedged race of the async driver: an original attempt, a backup if it is slow, one winner.

The original is sent at once. If it has not answered when the hedge delay has passed (on the
injected clock), and the budgets allow it, a backup goes to another endpoint on a copy of the
request. The first *usable* answer wins: a response that is not a failure, or whatever arrives
last when both fail. An attempt that fails while the other is still out is judged like any
failed attempt (it counts against its endpoint) and the race waits for the other. The loser is
cancelled before the winner is returned: its task is cancelled and awaited, so the engine has
dropped its connection (a request cut off mid-exchange cannot be reused) and its in-flight
count and pool slot are released by the time the caller sees the response; a loser that had
answered anyway has its response closed. The loser is charged nothing.

When the caller itself is cancelled, both attempts are cancelled the same way. Only the first
attempt of a call races: retries after a failed race go through the ordinary loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import httpx

from meshlib.clock import Clock
from meshlib.pipeline.attempt import Attempt
from meshlib.pipeline.exchange import Exchange
from meshlib.pipeline.hedging import HedgeState, Hedging

if TYPE_CHECKING:
    from meshlib.pipeline.base import PipelineBase

__all__ = ["Race"]

_Task = asyncio.Task[httpx.Response]
_READY_TURNS = 3


class Race:
    """One hedged first attempt; ``attempt`` is the attempt whose outcome ``run`` reports."""

    __slots__ = ("_clock", "_delay", "_ex", "_pipeline", "_state", "_tasks", "attempt")

    def __init__(
        self, pipeline: PipelineBase, ex: Exchange, state: HedgeState, delay: float, clock: Clock
    ) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._ex = ex
        self._state = state
        self._delay = delay
        self._tasks: dict[_Task, Attempt] = {}
        self.attempt: Attempt | None = None

    async def _send(self, request: httpx.Request) -> httpx.Response:
        engine = self._ex.engine
        if self._ex.suppress is None:
            response: httpx.Response = await engine.handle_async_request(request)
            return response
        with self._pipeline.suppression(request):
            response = await engine.handle_async_request(request)
            return response

    async def run(self, first: Attempt) -> httpx.Response:
        """Send ``first`` and maybe a backup; return the winning response or raise the last
        failure (``attempt`` says which attempt it belongs to)."""
        self.attempt = first
        ex = self._ex
        original = asyncio.ensure_future(self._send(ex.sent))
        self._tasks[original] = first
        timer = asyncio.ensure_future(self._clock.sleep(self._delay))
        try:
            await asyncio.wait((original, timer), return_when=asyncio.FIRST_COMPLETED)
            if not original.done():
                await _settle_ready(original)
        except BaseException:  # the caller was cancelled: so is its attempt
            timer.cancel()
            await self.abandon()
            raise
        if original.done():
            timer.cancel()
            self._tasks.clear()
            return original.result()
        backup = self._backup(first)
        if backup is None:
            self._tasks.clear()
            return await original
        second, request = backup
        self._tasks[asyncio.ensure_future(self._send(request))] = second
        try:
            return await self._settle()
        except BaseException:
            await self.abandon()
            raise

    def _backup(self, first: Attempt) -> tuple[Attempt, httpx.Request] | None:
        """The backup attempt, or None when there is no other endpoint or no budget."""
        ex = self._ex
        call = ex.call
        now = self._clock.now()
        states = call.service.eps.states
        others = sum(1 for st in states if st is not first.state and st.available(now))
        if others == 0:
            return None
        if not Hedging.spend(self._state, call.budget):
            if ex.obs is not None:
                ex.obs.hedge_outcome("budget_exhausted")
            return None
        try:
            second, request = ex.begin_hedge()
        except Exception:  # the deadline passed as the timer fired: no backup
            Hedging.refund(self._state, call.budget)
            return None
        if second.state is first.state:  # panic mode picked the same endpoint after all
            ex.loses(second)
            Hedging.refund(self._state, call.budget)
            return None
        if ex.obs is not None:
            ex.obs.hedge_sent(second, self._delay)
        return second, request

    async def _settle(self) -> httpx.Response:
        """Wait for the first usable answer among the attempts in flight."""
        tasks = self._tasks
        pending: set[_Task] = set(tasks)
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: tasks[t].number):
                attempt = tasks.pop(task)
                exc = task.exception()
                response = task.result() if exc is None else None
                last = not tasks
                if last:
                    self.attempt = attempt
                    if exc is not None:
                        raise exc
                    assert response is not None
                    return response
                if exc is None and response is not None and not self._ex.is_failure(response):
                    self.attempt = attempt
                    await self._cancel_others(winner=attempt)
                    return response
                await self._discard(attempt, response, exc)
                pending.discard(task)

    async def _discard(
        self, attempt: Attempt, response: httpx.Response | None, exc: BaseException | None
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):
            raise exc
        self._ex.discard(attempt, response, exc)
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()
        attempt.finish()

    async def _cancel_others(self, winner: Attempt) -> None:
        obs = self._ex.obs
        if obs is not None:
            obs.hedge_outcome("won" if winner.number > 0 else "lost")
        if winner.number > 0:
            self._state.won += 1
        else:
            self._state.lost += 1
        await self.abandon()

    async def abandon(self) -> None:
        """Cancel every attempt still in the race, wait until each is really gone (its
        connection dropped), close any response that arrived anyway, charge nothing."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tuple(tasks))
        for task, attempt in tasks.items():
            if not task.cancelled() and task.exception() is None:
                await _close(task.result())
            self._ex.loses(attempt)


async def _settle_ready(task: _Task) -> None:
    """Give an answer that has already arrived the turns it needs to finish (the socket read,
    then the task's step), so that no backup is sent for it: after the process was descheduled
    for a moment, the hedge timers of every call in flight expire together with their answers
    waiting on the sockets, and each backup would be spent on a call that was not slow."""
    for _ in range(_READY_TURNS):
        await asyncio.sleep(0)
        if task.done():
            return


async def _close(response: Any) -> None:
    with contextlib.suppress(Exception):
        await response.aclose()
