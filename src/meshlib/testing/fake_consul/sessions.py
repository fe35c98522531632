"""Sessions and the KV locks they hold, by Consul's rules (``state/session.go``, ``kvs.go``).

A session belongs to a node and is created with a name, health checks, a ``Behavior``
(``release`` or ``delete``), an optional TTL and a lock delay. A key is *locked* when a session
acquires it: ``?acquire`` succeeds for a free key (the lock index grows by one) or for the
holder itself (an update), and answers ``false`` to every other session; ``?release`` frees it
for the holder only. Destroying a session, or letting its TTL lapse (Consul's timers allow
twice the TTL), releases what it held, or deletes it under ``Behavior=delete``, and the freed
keys cannot be acquired by another session until the lock delay has passed.

Kept apart from HTTP; callers hold the state lock. Sessions here are not invalidated by their
checks turning critical, only by destroy and TTL (see the package docstring).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshlib.traffic.durations import format_go_duration

from .kvstore import KVStore

__all__ = ["MAX_LOCK_DELAY", "Session", "SessionStore"]

MAX_LOCK_DELAY = 60.0
"""``structs.MaxLockDelay``: a longer lock delay is refused."""
TTL_MULTIPLIER = 2
"""``structs.SessionTTLMultiplier``: a session lapses after twice its TTL without renewal."""


@dataclass(slots=True)
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay: float = 15.0
    behavior: str = "release"
    ttl: float | None = None
    node_checks: list[str] = field(default_factory=list)
    service_checks: list[dict[str, str]] | None = None
    create_index: int = 0
    modify_index: int = 0
    renewed_at: float = 0.0

    def render(self) -> dict[str, Any]:
        """``structs.Session`` as the HTTP API returns it (OSS: no namespace)."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": round(self.lock_delay * 1e9),
            "Behavior": self.behavior,
            "TTL": format_go_duration(self.ttl) if self.ttl else "",
            "NodeChecks": list(self.node_checks),
            "ServiceChecks": self.service_checks,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


class SessionStore:
    """Live sessions and the lock delays of keys they released."""

    def __init__(self, kv: KVStore) -> None:
        self.kv = kv
        self.sessions: dict[str, Session] = {}
        self.table_index = 0
        self.delays: dict[str, float] = {}
        """Key -> clock time before which no other session may acquire it."""

    def create(self, session: Session, index: int, now: float) -> Session:
        session.id = session.id or str(uuid.uuid4())
        session.create_index = session.modify_index = index
        session.renewed_at = now
        self.sessions[session.id] = session
        self.table_index = index
        return session

    def get(self, session_id: str, now: float) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or self._lapsed(session, now):
            return None
        return session

    def live(self, now: float) -> list[Session]:
        return sorted(
            (s for s in self.sessions.values() if not self._lapsed(s, now)),
            key=lambda s: s.create_index,
        )

    @staticmethod
    def _lapsed(session: Session, now: float) -> bool:
        return session.ttl is not None and now >= session.renewed_at + session.ttl * TTL_MULTIPLIER

    def expired(self, now: float) -> list[str]:
        """IDs of sessions whose TTL has lapsed (to be destroyed by the caller's write)."""
        return [sid for sid, s in self.sessions.items() if self._lapsed(s, now)]

    def destroy(self, session_id: str, now: float, alloc: Callable[[], int]) -> bool:
        """Invalidate a session: release (or delete) its keys and start their lock delays.
        True when something changed."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        index = alloc()
        held = [e for e in self.kv.entries.values() if e.session == session_id]
        for entry in held:
            if session.behavior == "delete":
                self.kv.delete(entry.key, recurse=False, cas=None, alloc=lambda: index)
            else:
                entry.session = None
                entry.modify_index = index
                self.kv.table_index = index
            if session.lock_delay > 0:
                self.delays[entry.key] = now + session.lock_delay
        self.table_index = index
        return True

    def delayed(self, key: str, now: float) -> bool:
        """True while a key freed by an invalidated session is in its lock delay."""
        return now < self.delays.get(key, 0.0)
