"""FakeConsul's Connect CA state: the roots, each service's leaf, rotation, renewal and pruning.

Consul's rules, in FakeConsul's terms: the CA bootstraps one active root the first time it is
used (so ``cryptography`` is imported only then); ``rotate`` makes a new root active and keeps
the old one listed (``Active: false``) until twice the leaf TTL has passed, as the leader's
``pruneCARoots`` does. A leaf is cached per service and re-issued when the root it chains to is
no longer active, or once 75% of its lifetime has passed (the middle of the agent's 60-90%
renewal window), or on ``reissue``. Each change takes a Raft-style index from ``State`` and
wakes the blocking queries on the roots or on that service's leaf.

Certificates carry real dates (TLS checks them), so this module uses the wall clock, not the
injected test clock; short leaf TTLs make renewal fast to test. ``ValidAfter`` is backdated a
minute for clock skew, as Consul does, but ``ValidBefore`` is the issue time plus the TTL so
that a TTL of a few seconds still yields a valid certificate.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from .state import State, StateError

if TYPE_CHECKING:
    from .ca_certs import Issued

__all__ = [
    "DEFAULT_LEAF_TTL",
    "ERR_CONNECT_DISABLED",
    "TOPIC_CA",
    "ConnectCA",
    "LeafRec",
    "RootRec",
    "go_time",
    "leaf_topic",
    "load_certs",
]

TOPIC_CA = "connect-ca"
DEFAULT_LEAF_TTL = 72 * 3600.0  # Consul's default leaf_cert_ttl
_ROOT_TTL = 10 * 365 * 86400.0  # Consul's default root_cert_ttl (87600h)
_BACKDATE = 60.0
_RENEW_AT = 0.75
ERR_CONNECT_DISABLED = "Connect must be enabled in order to use this endpoint"
_MISSING = (
    "FakeConsul's Connect CA needs the 'cryptography' package: install meshlib's testing "
    "extra (pip install 'meshlib[testing]') or pip install 'cryptography>=42,<47'"
)

WakeLater = Callable[[float, Callable[[], None]], None]


def leaf_topic(service: str) -> str:
    """The topic a blocking read of one service's leaf waits on."""
    return "leaf:" + service


def load_certs() -> ModuleType:
    """Import the X.509 module (and with it ``cryptography``) on first use, or explain."""
    try:
        from . import ca_certs
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "cryptography":
            raise ImportError(_MISSING) from exc
        raise
    return ca_certs


def go_time(moment: dt.datetime) -> str:
    """A certificate time as Go's ``time.Time`` marshals it in UTC (RFC 3339, seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class RootRec:
    """One CA root as ``/v1/connect/ca/roots`` lists it."""

    issued: Issued
    name: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    active: bool
    create_index: int
    modify_index: int
    rotated_out_at: float | None = None

    @property
    def id(self) -> str:
        return self.issued.fingerprint


@dataclass(slots=True)
class LeafRec:
    """A service's current leaf certificate and when it is due for renewal."""

    issued: Issued
    service: str
    uri: str
    serial: str
    valid_after: dt.datetime
    valid_before: dt.datetime
    root_id: str
    index: int
    renew_at: float
    stale: bool = False


class ConnectCA:
    """The built-in CA of one FakeConsul; every method expects ``state.lock`` to be held."""

    def __init__(
        self,
        state: State,
        *,
        datacenter: str,
        cluster_id: str,
        leaf_ttl: float = DEFAULT_LEAF_TTL,
        enabled: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.datacenter = datacenter
        self.cluster_id = cluster_id
        self.leaf_ttl = leaf_ttl
        self.enabled = enabled
        self._wall = wall
        self.wake_later: WakeLater | None = None
        self._roots: list[RootRec] = []
        self._leaves: dict[str, LeafRec] = {}
        self._serial = 0
        self.roots_index = 0

    @property
    def trust_domain(self) -> str:
        return f"{self.cluster_id}.consul"

    def spiffe_uri(self, service: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/default/dc/{self.datacenter}/svc/{service}"

    # ------------------------------------------------------------------ reads

    def require_enabled(self) -> None:
        if not self.enabled:
            raise StateError(500, ERR_CONNECT_DISABLED)

    def roots(self) -> list[RootRec]:
        """The trusted roots (bootstrapping the CA on first use), oldest first."""
        self.require_enabled()
        if not self._roots:
            self._rotate()
        self._prune()
        return list(self._roots)

    def active_root(self) -> RootRec:
        return next(r for r in self.roots() if r.active)

    def leaf(self, service: str) -> LeafRec:
        """``service``'s leaf, issuing or renewing it first when it is missing or due."""
        active = self.active_root()
        leaf = self._leaves.get(service)
        if leaf is None or leaf.stale or leaf.root_id != active.id or self._wall() >= leaf.renew_at:
            leaf = self._issue(service, active)
        return leaf

    # ----------------------------------------------------------------- writes

    def rotate(self) -> str:
        """Make a new root active (the old stays trusted for a while); returns its ID."""
        self.require_enabled()
        if not self._roots:
            self._rotate()
        return self._rotate().id

    def reissue(self, service: str | None = None) -> None:
        """Mark one service's leaf (or every leaf) for re-issue, waking its blocking readers."""
        self.require_enabled()
        targets = [service] if service is not None else list(self._leaves)
        woken = set()
        for name in targets:
            leaf = self._leaves.get(name)
            if leaf is not None and not leaf.stale:
                leaf.stale = True
                woken.add(leaf_topic(name))
        self._wake(woken)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _rotate(self) -> RootRec:
        certs = load_certs()
        now = self._wall()
        start = dt.datetime.fromtimestamp(now - _BACKDATE, dt.UTC)
        end = dt.datetime.fromtimestamp(now + _ROOT_TTL, dt.UTC)
        serial = self._next_serial()
        issued = certs.issue_root(serial, self.trust_domain, start, end)
        with self._state.write() as tx:
            for old in self._roots:
                if old.active:
                    old.active = False
                    old.rotated_out_at = now
                    old.modify_index = tx.index
            root = RootRec(
                issued=issued,
                name="Consul CA Primary Cert",
                serial=serial,
                not_before=issued.cert.not_valid_before_utc,
                not_after=issued.cert.not_valid_after_utc,
                active=True,
                create_index=tx.index,
                modify_index=tx.index,
            )
            self._roots.append(root)
            self.roots_index = tx.index
            # Leaves signed by the old root are now due: wake their watchers too.
            tx.topics.add(TOPIC_CA)
            tx.topics.update(leaf_topic(s) for s in self._leaves)
        if len(self._roots) > 1:
            self._later(2 * self.leaf_ttl, self._prune_locked)
        return root

    def _prune(self) -> None:
        keep_for = 2 * self.leaf_ttl
        now = self._wall()
        gone = [
            r
            for r in self._roots
            if not r.active and r.rotated_out_at is not None and now - r.rotated_out_at > keep_for
        ]
        if not gone:
            return
        with self._state.write() as tx:
            self._roots = [r for r in self._roots if r not in gone]
            self.roots_index = tx.index
            tx.topics.add(TOPIC_CA)

    def _prune_locked(self) -> None:
        with self._state.lock:
            if self.enabled and self._roots:
                self._prune()

    def _issue(self, service: str, root: RootRec) -> LeafRec:
        certs = load_certs()
        now = self._wall()
        ttl = self.leaf_ttl
        uri = self.spiffe_uri(service)
        serial = self._next_serial()
        start = dt.datetime.fromtimestamp(now - _BACKDATE, dt.UTC)
        # X.509 times are whole seconds: renew on the lifetime the certificate really has.
        expires = float(math.floor(now + ttl))
        ttl = max(expires - now, 0.0)
        end = dt.datetime.fromtimestamp(expires, dt.UTC)
        issued = certs.issue_leaf(root.issued, serial, service, uri, start, end)
        with self._state.write() as tx:
            leaf = LeafRec(
                issued=issued,
                service=service,
                uri=uri,
                serial=certs.colon_hex(serial.to_bytes((serial.bit_length() + 7) // 8, "big")),
                valid_after=issued.cert.not_valid_before_utc,
                valid_before=issued.cert.not_valid_after_utc,
                root_id=root.id,
                index=tx.index,
                renew_at=now + ttl * _RENEW_AT,
            )
            self._leaves[service] = leaf
            tx.topics.add(leaf_topic(service))
        self._later(ttl * _RENEW_AT, lambda: self._renew_due(service, leaf.serial))
        return leaf

    def _renew_due(self, service: str, serial: str) -> None:
        with self._state.lock:
            leaf = self._leaves.get(service)
            if leaf is None or leaf.serial != serial or leaf.stale:
                return
            leaf.stale = True
        self._wake({leaf_topic(service)})

    # --------------------------------------------------------------- plumbing

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        if self.wake_later is not None:
            self.wake_later(max(delay, 0.0), fn)

    def _wake(self, topics: set[str]) -> None:
        notify = self._state.notify
        if topics and notify is not None:
            notify(frozenset(topics))
