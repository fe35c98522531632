"""A Consul watch's per-service state, and the bound on blocking watches.

Split from ``discovery`` so the watch loop reads on its own; nothing here does I/O (a rejected
answer is logged here, where it is judged).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshlib.consul.parse import ParsedEntries, foreign, valid_service_name
from meshlib.discovery.base import Resolution, Target
from meshlib.errors import DiscoveryError

if TYPE_CHECKING:  # asyncio is imported where it runs: ``import meshlib`` does not need it
    import asyncio

__all__ = ["Watch", "WatchSlots", "check_names", "state_row"]

log = logging.getLogger("meshlib.discovery")


@dataclass
class Watch:
    target: Target
    first: concurrent.futures.Future[Resolution] = field(default_factory=concurrent.futures.Future)
    resolution: Resolution | None = None
    last_used: float = 0.0
    last_good: float = 0.0
    index: int = 0
    errors: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = None
    blocking: bool = False
    """Holds one of the ``max_watches`` blocking slots (else it polls)."""
    invalid_entries: int = 0
    """Invalid entries in the last answer (skipped, or the whole answer rejected)."""
    invalid_entries_total: int = 0
    rejected_updates: int = 0
    """Answers refused because every entry was invalid (the last good set was kept)."""

    def count_invalid(self, count: int) -> None:
        self.invalid_entries = count
        self.invalid_entries_total += count

    def reject(self, parsed: ParsedEntries) -> str:
        """Every entry of the answer is invalid: refuse the whole update, as Envoy rejects a
        bad config update and keeps serving the last good one. The set is kept, marked stale,
        and the next query blocks at the new index until the registry changes again. Returns
        the reason (capped and escaped), also logged and kept as ``last_error``."""
        self.count_invalid(parsed.rejected_count)
        self.rejected_updates += 1
        reasons = "; ".join(parsed.rejected)
        why = foreign(
            f"rejected an answer whose {parsed.rejected_count} entries are all invalid: {reasons}"
        )
        old = self.resolution
        log.warning(
            "Consul answered %s with only invalid entries; %s: %s",
            self.target,
            "keeping the last good endpoints" if old is not None else "no endpoints yet",
            why,
            extra={"service": str(self.target)},
        )
        self.last_error = why
        if old is not None and not old.stale:
            self.resolution = self.stale_copy(old)
        return why

    def stale_copy(self, old: Resolution) -> Resolution:
        """``old`` marked stale, dated from the last good answer."""
        return Resolution(
            target=old.target,
            endpoints=old.endpoints,
            source=old.source,
            updated_at=self.last_good,
            stale=True,
            connect=old.connect,
        )


class WatchSlots:
    """At most ``limit`` watches park blocking queries at once (each holds a connection to the
    agent for up to its wait); the others poll. A slot is claimed per round, so a slot freed
    by an idle watch goes to the next polled service that asks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: set[Target] = set()
        self._lock = threading.Lock()
        self._warned = False

    def claim(self, w: Watch) -> bool:
        """Claim a slot for ``w`` if one is free; True the first time one was not (warn)."""
        with self._lock:
            if not w.blocking and len(self._held) < self.limit:
                self._held.add(w.target)
                w.blocking = True
            warn = not w.blocking and not self._warned
            if warn:
                self._warned = True
        return warn

    def claim_or_poll(self, w: Watch, poll_interval: float) -> bool:
        """True if ``w`` may park blocking queries this round; the first watch refused a slot
        says, once, that it and any further ones are polled."""
        if self.claim(w):
            log.warning(
                "more than MESH_CONSUL_MAX_WATCHES=%d services are watched: %s and any further "
                "ones are polled every %gs with non-blocking queries (Consul limits connections "
                "per client address, 200 by default)",
                self.limit,
                w.target,
                poll_interval,
                extra={"service": str(w.target)},
            )
        return w.blocking

    def release(self, w: Watch) -> None:
        with self._lock:
            if w.blocking:
                self._held.discard(w.target)
                w.blocking = False


def state_row(w: Watch, now: float) -> dict[str, Any]:
    """One service's watch as ``mesh_state()`` shows it under ``discovery``: index, consecutive
    errors, last error (capped and escaped), staleness, ``mode`` (``blocking``, or ``polling``
    past ``max_watches``), invalid entries in the last answer and in all, and answers rejected
    because every entry was invalid."""
    res = w.resolution
    return {
        "index": w.index,
        "errors": w.errors,
        "last_error": w.last_error,
        "staleness_s": round(now - res.updated_at, 3) if res and res.stale else 0.0,
        "mode": "blocking" if w.blocking else "polling",
        "invalid_entries": w.invalid_entries,
        "invalid_entries_total": w.invalid_entries_total,
        "rejected_updates": w.rejected_updates,
    }


def check_names(target: Target) -> None:
    """Refuse a target whose parts are not Consul names before anything is asked of Consul."""
    for part, what in ((target.service, "service"), (target.tag, "tag"), (target.dc, "dc")):
        if part is not None and not valid_service_name(part):
            raise DiscoveryError(
                f"{what} {part!r} is not a valid Consul name: use letters, digits and '-', "
                "starting with a letter or digit, at most 63 characters"
            )
