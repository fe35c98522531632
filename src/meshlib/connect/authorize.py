"""Who may call this service: Consul intentions, asked of the local agent and cached briefly.

Each caller identity (the SPIFFE URI in its client certificate) is checked with the agent's
``/v1/agent/connect/authorize``, which applies the intentions with Consul's own precedence and
default (the ACL default policy). The answer, allow or deny with Consul's reason, is cached per
caller for ``ttl`` seconds (bounded, so a changed intention takes effect within it); an agent
that cannot answer denies, because an authorization that fails open is no authorization.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.connect.certs import CertificateWatcher
from meshlib.consul.parse import foreign

__all__ = ["Authorizer", "Decision"]

_MAX_CACHED = 4096


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


class Authorizer:
    """Intention checks for calls to ``service`` (this process's own service)."""

    def __init__(
        self,
        watcher: CertificateWatcher,
        *,
        ttl: float = 5.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watcher = watcher
        self.service = watcher.service
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Decision]] = {}
        self._lock = threading.Lock()
        self.checks = 0

    def cached(self, client_uri: str, client_serial: str = "") -> Decision | None:
        """The cached decision for this caller, if still fresh (never blocks)."""
        hit = self._cache.get((client_uri, client_serial))
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    def check(self, client_uri: str, client_serial: str = "") -> Decision:
        """Allow or deny the caller (blocking; at most ``timeout`` on a cache miss)."""
        key = (client_uri, client_serial)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        decision, cacheable = self._ask(client_uri, client_serial)
        if not cacheable:  # the agent did not answer: deny this call, ask again for the next
            return decision
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (now + self._ttl, decision)
        return decision

    def _ask(self, client_uri: str, client_serial: str) -> tuple[Decision, bool]:
        self.checks += 1
        agent = self._watcher.agent
        future = self._watcher.submit(agent.authorize(self.service, client_uri, client_serial))
        try:
            allowed, reason = future.result(timeout=self._timeout)
        except Exception as exc:
            future.cancel()
            why = foreign(str(exc) or type(exc).__name__)
            return Decision(False, f"the Consul agent could not check intentions: {why}"), False
        return Decision(allowed, reason), True
