"""Writes to FakeConsul's state: the transaction, the change topics it notifies, its errors."""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "TOPIC_ALL",
    "TOPIC_CHECKS",
    "TOPIC_KV",
    "TOPIC_NODES",
    "TOPIC_RUNNABLE",
    "TOPIC_SERVICES",
    "TOPIC_TTL",
    "StateError",
    "Tx",
    "service_topic",
]

TOPIC_NODES = "nodes"
TOPIC_SERVICES = "services"
TOPIC_CHECKS = "checks"
TOPIC_KV = "kv"
TOPIC_TTL = "ttl"
# Emitted when a check the agent executes (HTTP/TCP) appears, changes or goes away.
TOPIC_RUNNABLE = "runnable"
TOPIC_ALL = "*"


def service_topic(name: str) -> str:
    """The topic a blocking query on one service's health or catalog entry waits on."""
    return "svc:" + name


class StateError(Exception):
    """A write Consul would refuse; ``status`` and ``message`` become the plain-text answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Tx:
    """One write: allocates an index lazily and records what it touched."""

    __slots__ = ("_allocate", "_index", "services", "tables", "topics")

    def __init__(self, allocate: Callable[[], int]) -> None:
        self._allocate = allocate
        self._index: int | None = None
        self.services: set[str] = set()
        self.tables: set[str] = set()
        self.topics: set[str] = set()

    @property
    def index(self) -> int:
        """This write's index, allocated on first use so no-op writes leave the index alone."""
        if self._index is None:
            self._index = self._allocate()
        return self._index

    @property
    def changed(self) -> bool:
        return self._index is not None

    def touch(self) -> None:
        """Mark the write as a change even if nothing else asked for the index yet."""
        _ = self.index
