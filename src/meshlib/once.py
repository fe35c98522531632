"""Per-key state built once, even when several threads ask for it first at the same moment.

``MeshClient`` is shared by threads, so the first calls to a service can arrive together. State
that must exist once per key (a service's limits, retry budget, hedge window, endpoint health)
cannot be built with "look it up, build it if missing": two threads that both miss would each
build their own, and the calls holding the copy that lost would bypass the limit or the budget
it stands for. The lookup that hits stays lock-free; only a miss takes the lock and looks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, MutableMapping
from typing import TypeVar

__all__ = ["build_once"]

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


def build_once(
    table: MutableMapping[K, V], key: K, lock: threading.Lock, build: Callable[[], V]
) -> V:
    """``table[key]``, built by ``build()`` under ``lock`` if no thread has built it yet."""
    with lock:
        found = table.get(key, _MISSING)
        if found is _MISSING:
            found = table[key] = build()
        return found  # type: ignore[return-value]
