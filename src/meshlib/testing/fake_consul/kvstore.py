"""The key/value store's data and index rules, kept apart from locking and HTTP.

The indexes follow Consul's state store (``state/kvs.go``) because blocking KV reads depend on
them: an existing key reports its own ``ModifyIndex``; a missing key, or a prefix with nothing
under it, reports the table index (the highest of writes and tombstones), which is why a watch on
a missing key returns as soon as *any* key changes. Deletes leave tombstones so that a prefix
watch notices a key disappearing.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import KVEntry

__all__ = ["KVStore"]


class KVStore:
    """Entries, tombstones and the table index; callers hold the state lock."""

    def __init__(self) -> None:
        self.entries: dict[str, KVEntry] = {}
        self.tombstones: dict[str, int] = {}
        self.table_index = 0

    def get(self, key: str) -> KVEntry | None:
        return self.entries.get(key)

    def list_prefix(self, prefix: str) -> list[KVEntry]:
        """Every entry whose key starts with ``prefix``, sorted by key as Consul returns them."""
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def keys(self, prefix: str, separator: str | None) -> list[str]:
        """``?keys``: keys under ``prefix``, rolled up at the first ``separator`` after it."""
        out: list[str] = []
        seen: set[str] = set()
        for key in sorted(self.entries):
            if not key.startswith(prefix):
                continue
            if separator:
                cut = key.find(separator, len(prefix))
                if cut != -1:
                    key = key[: cut + len(separator)]
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def index_for_key(self, key: str) -> int:
        entry = self.entries.get(key)
        return entry.modify_index if entry is not None else self.table_index

    def index_for_prefix(self, prefix: str) -> int:
        if not prefix:
            return self.table_index
        best = 0
        for entry in self.entries.values():
            if entry.key.startswith(prefix) and entry.modify_index > best:
                best = entry.modify_index
        for key, index in self.tombstones.items():
            if key.startswith(prefix) and index > best:
                best = index
        return best or self.table_index

    def put(
        self,
        key: str,
        value: bytes | None,
        *,
        flags: int,
        cas: int | None,
        alloc: Callable[[], int],
    ) -> bool:
        """Set ``key``; with ``cas`` only if its ModifyIndex matches (0 = must not exist)."""
        existing = self.entries.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False
            if cas != 0 and (existing is None or existing.modify_index != cas):
                return False
        index = alloc()
        self.entries[key] = KVEntry(
            key=key,
            value=value or None,
            flags=flags,
            create_index=existing.create_index if existing else index,
            modify_index=index,
            lock_index=existing.lock_index if existing else 0,
            session=existing.session if existing else None,  # a plain write keeps the lock
        )
        self.tombstones.pop(key, None)
        self.table_index = index
        return True

    def lock(
        self, key: str, value: bytes | None, *, flags: int, session: str, alloc: Callable[[], int]
    ) -> None:
        """An ``?acquire`` the caller has allowed: a new holder raises the lock index, the
        holder's own update keeps it."""
        existing = self.entries.get(key)
        index = alloc()
        same = existing is not None and existing.session == session
        self.entries[key] = KVEntry(
            key=key,
            value=value or None,
            flags=flags,
            create_index=existing.create_index if existing else index,
            modify_index=index,
            lock_index=(existing.lock_index if existing else 0) + (0 if same else 1),
            session=session,
        )
        self.tombstones.pop(key, None)
        self.table_index = index

    def unlock(
        self, key: str, value: bytes | None, *, flags: int, session: str, alloc: Callable[[], int]
    ) -> bool:
        """``?release``: only the holder frees the key (and sets its value); else False."""
        existing = self.entries.get(key)
        if existing is None or existing.session != session:
            return False
        index = alloc()
        self.entries[key] = KVEntry(
            key=key,
            value=value or None,
            flags=flags,
            create_index=existing.create_index,
            modify_index=index,
            lock_index=existing.lock_index,
        )
        self.table_index = index
        return True

    def delete(self, key: str, *, recurse: bool, cas: int | None, alloc: Callable[[], int]) -> bool:
        """Delete ``key`` (or every key under it); with ``cas`` only on a matching index."""
        if recurse:
            doomed = [k for k in self.entries if k.startswith(key)]
        else:
            existing = self.entries.get(key)
            if cas is not None:
                if cas == 0:
                    return False
                if existing is None:
                    return True
                if existing.modify_index != cas:
                    return False
            doomed = [key] if existing is not None else []
        if not doomed:
            return True
        index = alloc()
        for k in doomed:
            del self.entries[k]
            self.tombstones[k] = index
        self.table_index = index
        return True

    def clamp(self, limit: int) -> None:
        """Lower every index above ``limit`` to it (``reset_index``: a restored snapshot)."""
        for entry in self.entries.values():
            entry.create_index = min(entry.create_index, limit)
            entry.modify_index = min(entry.modify_index, limit)
        for k, index in self.tombstones.items():
            self.tombstones[k] = min(index, limit)
        self.table_index = min(self.table_index, limit)
