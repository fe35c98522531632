"""After ``os.fork()``, a child process forgets the connections it inherited from its parent.

A client used before a fork (gunicorn's ``preload_app``, multiprocessing's fork start method)
leaves open sockets in the child that are the *same* TCP connections the parent keeps using:
both processes would write requests on them and read each other's responses. At fork, in the
child only, every engine drops its pools and closes its copies of their sockets, so the child
opens connections of its own and the parent's are untouched (closing a forked copy of a socket
sends nothing on the wire while the parent still holds it). Engines register here when built.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "keep", "track"]


class ForkAware(Protocol):
    def forget_inherited(self) -> None:
        """Drop every pooled connection without touching the parent's copies or event loop."""


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_kept: list[object] = []


def keep(obj: object) -> None:
    """Hold an inherited object for the life of the child, so its finalizer never runs."""
    _kept.append(obj)


def track(engine: ForkAware) -> None:
    _live.add(engine)


def _after_fork_in_child() -> None:
    for engine in list(_live):
        engine.forget_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)
