"""The private event loop thread the Consul watches run on, outside every caller's context.

Why a module of its own: the watches live on a loop of meshlib's, never the caller's (so no
caller's loop or thread ever blocks on Consul, and sync and async clients share the watches),
and that loop's life (started on first use, stopped on close) is one concern apart from what
the watches ask Consul. A watch starts when a user's request first names a service; run in
that request's context, its long polls would become children of the request's span for as long
as the watch lives. So everything here runs in ``otel.background_context()``: an empty
``contextvars.Context`` with HTTP instrumentation suppressed.

A fork copies the loop object but not its thread: in the child the loop never runs again. At
fork, in the child only, every tracked discovery forgets its inherited loop, client and watch
tasks (``forget_inherited``), which are kept referenced so that no finalizer touches what the
parent still uses, and starts fresh on its next use.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from meshlib.otel.gate import background_context

if TYPE_CHECKING:  # asyncio is imported when the loop starts: ``import meshlib`` needs none
    import asyncio

__all__ = ["ForkAware", "WatchLoop", "keep", "track"]


class ForkAware(Protocol):
    def forget_inherited(self) -> None:
        """In a forked child: drop the parent's loop, client and watches; start afresh later."""


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_kept: list[object] = []


def track(obj: ForkAware) -> None:
    _live.add(obj)


def keep(*objs: object) -> None:
    """Hold inherited objects for the life of the child, so their finalizers never run."""
    _kept.extend(o for o in objs if o is not None)


def _after_fork_in_child() -> None:
    for obj in list(_live):
        obj.forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WatchLoop:
    """One event loop on one daemon thread, started on first use."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop (started if need be); the caller holds the lock that
        serialises starts."""
        loop = self.loop
        if loop is None:
            loop = self._start()
        loop.call_soon_threadsafe(fn, *args, context=background_context())

    def take(self) -> tuple[asyncio.AbstractEventLoop | None, threading.Thread | None]:
        """Hand the loop and its thread to the closer; the next ``call`` starts a new one."""
        found = self.loop, self.thread
        self.loop = self.thread = None
        return found

    def _start(self) -> asyncio.AbstractEventLoop:
        import asyncio

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(
            target=background_context().run, args=(run,), name="meshlib-consul-watch", daemon=True
        )
        thread.start()
        ready.wait()
        self.loop, self.thread = loop, thread
        return loop
