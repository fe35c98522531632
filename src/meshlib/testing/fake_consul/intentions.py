"""Connect intentions: storage by source and destination, Consul's precedence, and authorization.

Precedence is ``UpdatePrecedence`` from Consul's ``structs/intention.go`` with the namespace
always exact (OSS): an exact destination scores 9 with an exact source and 8 with ``*``; a
``*`` destination 6 and 5. Evaluation for a destination sorts the candidates by precedence (ties
broken by source then destination name, ``IntentionPrecedenceSorter``) and the first whose
source matches the caller decides; nothing matching falls back to the ACL default policy. The
reason strings are those of the agent's ``ConnectAuthorize`` (``agent/connect_auth.go``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .state import State, StateError

__all__ = [
    "TOPIC_INTENTIONS",
    "IntentionRec",
    "Intentions",
    "parse_service_uri",
    "precedence",
]

TOPIC_INTENTIONS = "intentions"
WILDCARD = "*"
DEFAULT_REASON = "Default behavior configured by ACLs"
_SERVICE_PATH = re.compile(r"^(?:/ap/([^/]+))?/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)$")
# Other SPIFFE IDs Consul recognises (agents, servers, mesh gateways, workload identities).
_OTHER_PATHS = (
    re.compile(r"^(?:/ap/([^/]+))?/agent/client/dc/([^/]+)/id/([^/]+)$"),
    re.compile(r"^/agent/server/dc/([^/]+)$"),
    re.compile(r"^(?:/ap/([^/]+))?/gateway/mesh/dc/([^/]+)$"),
    re.compile(r"^/ap/([^/]+)/ns/([^/]+)/identity/([^/]+)$"),
)


def precedence(source: str, destination: str) -> int:
    """Consul's precedence for an OSS intention (namespaces always exact)."""
    top = 9 if destination != WILDCARD else 6
    return top - (0 if source != WILDCARD else 1)


def parse_service_uri(uri: str) -> str:
    """The service a Connect client certificate URI names, or Consul's 400 reason."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "spiffe" or not parts.netloc:
        raise StateError(400, "ClientCertURI not a valid Connect identifier")
    found = _SERVICE_PATH.match(parts.path)
    if found is not None:
        return found.group(4)
    if parts.path in ("", "/") or any(p.match(parts.path) for p in _OTHER_PATHS):
        raise StateError(400, "ClientCertURI not a valid Service identifier")
    raise StateError(400, "ClientCertURI not a valid Connect identifier")


def _go_time_nano(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class IntentionRec:
    """One L4 intention. ``id`` is set only for those created through the legacy POST."""

    source: str
    destination: str
    action: str
    description: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    id: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    create_index: int = 0
    modify_index: int = 0

    @property
    def precedence(self) -> int:
        return precedence(self.source, self.destination)

    def sort_key(self) -> tuple[int, str, str]:
        return (-self.precedence, self.source, self.destination)

    def describe(self) -> str:
        """Consul's ``Intention.String()``: ``default/web => default/db (Precedence: 9, ...)``."""
        id_part = f"ID: {self.id}, " if self.id else ""
        return (
            f"default/{self.source} => default/{self.destination} "
            f"({id_part}Precedence: {self.precedence}, Action: {self.action.upper()})"
        )

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id:
            out["ID"] = self.id
        out.update(
            Description=self.description,
            SourceNS="default",
            SourceName=self.source,
            DestinationNS="default",
            DestinationName=self.destination,
            SourceType="consul",
            Action=self.action,
            Meta=dict(self.meta),
            Precedence=self.precedence,
        )
        if self.created_at is not None and self.updated_at is not None:
            out["CreatedAt"] = _go_time_nano(self.created_at)
            out["UpdatedAt"] = _go_time_nano(self.updated_at)
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out


def validate(action: str, source_type: str) -> None:
    """The L4 checks of ``Intention.Validate`` that a request body can fail."""
    if action not in ("allow", "deny"):
        raise StateError(500, "Action must be set to 'allow' or 'deny'")
    if source_type not in ("", "consul"):
        raise StateError(500, "SourceType must be set to 'consul'")


class Intentions:
    """Every intention of the datacenter, keyed by (source, destination); lock held by callers."""

    def __init__(self, state: State, *, wall: Callable[[], float] | None = None) -> None:
        self._state = state
        self._by_pair: dict[tuple[str, str], IntentionRec] = {}
        self.index = 0
        self._now = wall

    def _timestamp(self) -> dt.datetime:
        if self._now is None:
            return dt.datetime.now(dt.UTC)
        return dt.datetime.fromtimestamp(self._now(), dt.UTC)

    def all(self) -> list[IntentionRec]:
        """Every intention in evaluation order (highest precedence first)."""
        return sorted(self._by_pair.values(), key=IntentionRec.sort_key)

    def get(self, source: str, destination: str) -> IntentionRec | None:
        return self._by_pair.get((source, destination))

    def by_id(self, intention_id: str) -> IntentionRec | None:
        return next((i for i in self._by_pair.values() if i.id == intention_id), None)

    def upsert(
        self,
        source: str,
        destination: str,
        action: str,
        *,
        description: str = "",
        meta: dict[str, str] | None = None,
        legacy: bool = False,
    ) -> IntentionRec:
        """Create or replace the intention for the pair (``legacy`` assigns an ID, refuses dups)."""
        old = self._by_pair.get((source, destination))
        if legacy and old is not None:
            raise StateError(500, f"duplicate intention found: {old.describe()}")
        ident = str(uuid.uuid4()) if legacy else (old.id if old is not None else "")
        with self._state.write() as tx:
            now = self._timestamp() if ident else None
            rec = IntentionRec(
                source=source,
                destination=destination,
                action=action,
                description=description,
                meta=dict(meta or {}),
                id=ident,
                created_at=(old.created_at if old is not None and not legacy else now),
                updated_at=now,
                create_index=old.create_index if old is not None else tx.index,
                modify_index=tx.index,
            )
            self._by_pair[(source, destination)] = rec
            self.index = tx.index
            tx.topics.add(TOPIC_INTENTIONS)
        return rec

    def delete(self, source: str, destination: str) -> bool:
        if (source, destination) not in self._by_pair:
            return False
        with self._state.write() as tx:
            del self._by_pair[(source, destination)]
            self.index = tx.index
            tx.topics.add(TOPIC_INTENTIONS)
        return True

    def matching(self, destination: str) -> list[IntentionRec]:
        """The intentions that apply to ``destination``, in evaluation order."""
        return [i for i in self.all() if i.destination in (destination, WILDCARD)]

    def matching_source(self, source: str) -> list[IntentionRec]:
        return [i for i in self.all() if i.source in (source, WILDCARD)]

    def decide(self, source: str, destination: str, default_allow: bool) -> tuple[bool, str]:
        """Whether ``source`` may connect to ``destination``, with Consul's reason."""
        for ixn in self.matching(destination):
            if ixn.source in (source, WILDCARD):
                return ixn.action == "allow", f"Matched L4 intention: {ixn.describe()}"
        return default_allow, DEFAULT_REASON
