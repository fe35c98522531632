"""Calling Connect services: the client side of Connect's mutual TLS, per upstream identity.

``ConnectClient`` turns the current certificate bundle into a client ``SSLContext`` (rebuilt
when the leaf or the roots rotate; connections already open keep theirs) and hands the engine
one ``Peer`` per upstream service. A ``Peer`` says which identity the server must prove: its
certificate must chain to the current roots *and* carry the SPIFFE URI of the service being
called (``/svc/<service>`` in this cluster's trust domain, any datacenter), or the connection is
refused before a byte of the request is sent, which the pipeline treats as a connect failure
(requeued on another endpoint, counted against this one). The TLS server name is the one Consul
gives Envoy upstreams, ``<service>.<namespace>.<datacenter>.internal.<trust-domain>``, so
sidecar peers route it as they would route Envoy's own traffic.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, Protocol

from meshlib.connect.certs import Bundle
from meshlib.connect.identity import SpiffeID, parse_spiffe_id
from meshlib.connect.tls import client_context, peer_uris

__all__ = ["BundleSource", "ConnectClient", "Peer"]


class BundleSource(Protocol):
    @property
    def bundle(self) -> Bundle: ...

    def subscribe(self, callback: Any) -> None: ...


class Peer:
    """The identity one upstream service must present (an ``extensions.ConnectPeer``)."""

    __slots__ = ("_client", "expected", "key", "server_hostname")

    def __init__(self, client: ConnectClient, expected: SpiffeID, mine: SpiffeID) -> None:
        self._client = client
        self.expected = expected
        self.key = f"{mine.uri} -> {expected.uri}"  # a connection carries both identities
        td = expected.trust_domain
        self.server_hostname = (
            f"{expected.service}.{expected.namespace}.{expected.datacenter}.internal.{td}"
        )

    def context(self) -> ssl.SSLContext:
        return self._client.context()

    def check(self, peercert: dict[str, Any] | None) -> str | None:
        uris = peer_uris(peercert)
        for uri in uris:
            sid = parse_spiffe_id(uri)
            if sid is not None and sid.same_service(self.expected):
                return None
        shown = ", ".join(uris) if uris else "no SPIFFE URI"
        needs = self.expected.uri
        return f"the server presented {shown}; calling {self.expected.service!r} needs {needs}"


class ConnectClient:
    """Client TLS for every Connect upstream, kept current with the certificate bundle."""

    def __init__(self, source: BundleSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._peers: dict[str, Peer] = {}
        source.subscribe(self._rotated)

    def _rotated(self, bundle: Bundle) -> None:
        fresh = _context_for(bundle)
        with self._lock:
            self._context = fresh
            self._peers.clear()  # the trust domain may have changed with the roots

    def context(self) -> ssl.SSLContext:
        ctx = self._context
        if ctx is None:
            with self._lock:
                if self._context is None:
                    self._context = _context_for(self._source.bundle)
                ctx = self._context
        return ctx

    def peer(self, service: str) -> Peer:
        """The ``Peer`` for calls to ``service`` (cached until the next rotation)."""
        peer = self._peers.get(service)
        if peer is None:
            bundle = self._source.bundle
            mine = bundle.identity
            expected = SpiffeID(
                trust_domain=bundle.trust_domain,
                datacenter=mine.datacenter,
                service=service,
                namespace=mine.namespace,
                partition=mine.partition,
            )
            peer = self._peers[service] = Peer(self, expected, mine)
        return peer


def _context_for(bundle: Bundle) -> ssl.SSLContext:
    return client_context(bundle.leaf.cert_pem, bundle.leaf.key_pem, bundle.roots.pems)
