"""Arranging FakeConsul's Connect from Python: CA rotation, leaf lifetimes, intentions, the switch.

The methods act on the same state the HTTP endpoints serve and wake the same blocking queries,
so ``rotate_ca()`` is seen by a client parked on ``/v1/agent/connect/ca/roots`` at once.
Refusals Consul would answer with a status (Connect disabled, a bad action) surface as
``ValueError`` with Consul's message; a missing ``cryptography`` as ``ImportError`` saying what
to install.
"""

from __future__ import annotations

from typing import Any

from meshlib.traffic.durations import parse_go_duration

from .connect_ca import TOPIC_CA
from .connect_state import ConnectState
from .intentions import TOPIC_INTENTIONS, validate
from .state import State, StateError

__all__ = ["ConnectAPI", "parse_leaf_ttl"]


def parse_leaf_ttl(ttl: str | float) -> float:
    """A leaf TTL as seconds (a Go duration such as ``"72h"`` or ``"2s"``, or a number)."""
    seconds = parse_go_duration(ttl) if isinstance(ttl, str) else float(ttl)
    if seconds <= 0:
        raise ValueError(f"leaf_cert_ttl must be positive, got {ttl!r}")
    return seconds


class ConnectAPI:
    """The Connect half of ``FakeConsul``'s public API."""

    _state: State
    _connect: ConnectState

    @property
    def connect_enabled(self) -> bool:
        return self._connect.ca.enabled

    def set_connect_enabled(self, enabled: bool = True) -> None:
        """Turn Connect on or off; off, the CA endpoints answer 500 as a real agent does."""
        with self._state.lock:
            self._connect.ca.enabled = enabled
            woken = {TOPIC_CA, TOPIC_INTENTIONS}
        notify = self._state.notify
        if notify is not None:
            notify(frozenset(woken))

    @property
    def trust_domain(self) -> str:
        """``<cluster-id>.consul``, the host of every SPIFFE ID this CA issues."""
        return self._connect.ca.trust_domain

    def spiffe_uri(self, service: str) -> str:
        """The URI SAN of ``service``'s leaf (``spiffe://<trust-domain>/ns/default/dc/...``)."""
        return self._connect.ca.spiffe_uri(service)

    @property
    def leaf_cert_ttl(self) -> float:
        return self._connect.ca.leaf_ttl

    def set_leaf_cert_ttl(self, ttl: str | float) -> None:
        """Change the lifetime of leaves issued from now on (``"72h"``, ``"3s"``, ``0.5``)."""
        seconds = parse_leaf_ttl(ttl)
        with self._state.lock:
            self._connect.ca.leaf_ttl = seconds

    def rotate_ca(self) -> str:
        """Make a new root active, as a CA configuration change does; returns its ID.

        The old root stays in ``Roots`` with ``Active: false`` for twice the leaf TTL (then it is
        pruned, as Consul's leader does); every leaf becomes due and is re-issued, signed by the
        new root, on its next read, which wakes its blocking readers.
        """
        with self._state.lock:
            try:
                return self._connect.ca.rotate()
            except StateError as exc:
                raise ValueError(exc.message) from None

    def reissue_leaf(self, service: str | None = None) -> None:
        """Re-issue ``service``'s leaf (or every leaf) before its expiry, waking its watchers."""
        with self._state.lock:
            try:
                self._connect.ca.reissue(service)
            except StateError as exc:
                raise ValueError(exc.message) from None

    def ca_root_pems(self) -> list[str]:
        """The trusted roots' PEM certificates, the active root first."""
        with self._state.lock:
            try:
                roots = self._connect.ca.roots()
            except StateError as exc:
                raise ValueError(exc.message) from None
        return [r.issued.cert_pem for r in sorted(roots, key=lambda r: not r.active)]

    def upsert_intention(
        self, source: str, destination: str, action: str = "allow", *, description: str = ""
    ) -> None:
        """Create or replace an L4 intention, as ``PUT /v1/connect/intentions/exact`` does."""
        with self._state.lock:
            try:
                self._connect.ca.require_enabled()
                validate(action, "")
                self._connect.intentions.upsert(
                    source, destination, action, description=description
                )
            except StateError as exc:
                raise ValueError(exc.message) from None

    def delete_intention(self, source: str, destination: str) -> bool:
        """Remove an intention; False when there was none."""
        with self._state.lock:
            return self._connect.intentions.delete(source, destination)

    def intentions(self) -> list[dict[str, Any]]:
        """Every intention as ``GET /v1/connect/intentions`` renders it, in evaluation order."""
        with self._state.lock:
            return [i.render() for i in self._connect.intentions.all()]

    def check_intention(self, source: str, destination: str) -> tuple[bool, str]:
        """What ``/v1/agent/connect/authorize`` would answer for ``source`` calling it."""
        with self._state.lock:
            conn = self._connect
            return conn.intentions.decide(source, destination, conn.default_allow)
