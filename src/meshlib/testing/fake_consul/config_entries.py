"""Config entries as Consul's state store keeps them: by kind and name, with Raft indexes.

Each entry records its ``CreateIndex`` and ``ModifyIndex``; the table index (the highest write
or delete) is what list reads and discovery-chain reads report, so a blocking chain query wakes
on any config write, as Consul's does (the chain depends on entries of several services).
Check-and-set follows the KV rules: ``cas=0`` means "only if absent". Callers hold the state
lock; ``alloc`` hands out the write's index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TOPIC_CONFIG", "ConfigRec", "ConfigStore"]

TOPIC_CONFIG = "config"


@dataclass(slots=True)
class ConfigRec:
    entry: dict[str, Any]
    create_index: int
    modify_index: int

    def render(self) -> dict[str, Any]:
        return {**self.entry, "CreateIndex": self.create_index, "ModifyIndex": self.modify_index}


class ConfigStore:
    """Entries keyed by ``(kind, name)`` and the table index."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], ConfigRec] = {}
        self.table_index = 0

    def get(self, kind: str, name: str) -> ConfigRec | None:
        return self.entries.get((kind, name))

    def entry(self, kind: str, name: str) -> Mapping[str, Any] | None:
        rec = self.entries.get((kind, name))
        return rec.entry if rec is not None else None

    def list(self, kind: str) -> list[ConfigRec]:
        return [self.entries[k] for k in sorted(self.entries) if k[0] == kind]

    def put(self, entry: dict[str, Any], *, cas: int | None, alloc: Callable[[], int]) -> bool:
        key = (str(entry["Kind"]), str(entry["Name"]))
        old = self.entries.get(key)
        if cas is not None and (old.modify_index if old is not None else 0) != cas:
            return False
        clean = {k: v for k, v in entry.items() if k not in ("CreateIndex", "ModifyIndex")}
        if old is not None and old.entry == clean:
            return True  # an identical write changes nothing and wakes nobody
        index = alloc()
        self.entries[key] = ConfigRec(clean, old.create_index if old else index, index)
        self.table_index = index
        return True

    def delete(self, kind: str, name: str, *, cas: int | None, alloc: Callable[[], int]) -> bool:
        old = self.entries.get((kind, name))
        if cas is not None and (old is None or old.modify_index != cas):
            return False
        if old is None:
            return True
        del self.entries[(kind, name)]
        self.table_index = alloc()
        return True
