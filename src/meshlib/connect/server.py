"""Serving as a Connect service: the rotating server TLS context and the intention checks.

``ConnectServer`` is what an application hands its HTTP server (``ssl_context``) and its
middleware (``authorize``). The server context presents this service's current leaf, requires a
client certificate that chains to the current roots, and follows rotation without a restart;
``authorize`` checks the caller's identity against Consul's intentions. Which servers expose the
client certificate to the application is in docs/security.md.
"""

from __future__ import annotations

import ssl
from typing import Any

from meshlib.connect.authorize import Authorizer, Decision
from meshlib.connect.certs import Bundle, CertificateWatcher
from meshlib.connect.identity import SpiffeID, parse_spiffe_id
from meshlib.connect.tls import RotatingServerContext, peer_uris

__all__ = ["Caller", "ConnectServer", "caller_from_peercert"]


class Caller:
    """The verified caller of one inbound request."""

    __slots__ = ("identity", "serial", "uri")

    def __init__(self, uri: str, identity: SpiffeID | None, serial: str) -> None:
        self.uri = uri
        self.identity = identity
        self.serial = serial

    def __repr__(self) -> str:
        return f"Caller({self.uri!r})"


def _colon_hex(serial: str) -> str:
    """``getpeercert()``'s serial (upper-case hex) in Consul's form: ``4a:e2:...``."""
    digits = serial.strip().lower()
    if len(digits) % 2:
        digits = "0" + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def caller_from_peercert(peercert: dict[str, Any] | None) -> Caller | None:
    """The caller named by a client certificate (``SSLSocket.getpeercert()``), if any."""
    for uri in peer_uris(peercert):
        sid = parse_spiffe_id(uri)
        if sid is not None:
            return Caller(uri, sid, _colon_hex(str((peercert or {}).get("serialNumber", ""))))
    return None


class ConnectServer:
    """This service's server side of Connect, kept current by a ``CertificateWatcher``."""

    def __init__(self, watcher: CertificateWatcher, *, authz_ttl: float = 5.0) -> None:
        self.watcher = watcher
        bundle = watcher.bundle
        self._rotating = RotatingServerContext(
            bundle.leaf.cert_pem, bundle.leaf.key_pem, bundle.roots.pems
        )
        watcher.subscribe(self._rotated)
        self.authorizer = Authorizer(watcher, ttl=authz_ttl)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context to give the server once; it follows rotation by itself."""
        return self._rotating.context

    @property
    def service(self) -> str:
        return self.watcher.service

    def _rotated(self, bundle: Bundle) -> None:
        self._rotating.update(bundle.leaf.cert_pem, bundle.leaf.key_pem, bundle.roots.pems)

    def authorize_cached(self, caller: Caller | None) -> Decision | None:
        """``authorize``'s answer when it needs no call to the agent, else None."""
        if caller is None:
            return Decision(False, "the request carries no Connect client certificate")
        return self.authorizer.cached(caller.uri, caller.serial)

    def authorize(self, caller: Caller | None) -> Decision:
        """May ``caller`` call this service? No caller (no Connect certificate) never may."""
        if caller is None:
            return Decision(False, "the request carries no Connect client certificate")
        return self.authorizer.check(caller.uri, caller.serial)
