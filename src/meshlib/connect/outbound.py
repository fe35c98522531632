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

import concurrent.futures
import itertools
import ssl
import threading
from typing import Any, Protocol

from meshlib.connect.certs import Bundle
from meshlib.connect.identity import SpiffeID, parse_spiffe_id
from meshlib.connect.tls import client_context, peer_uris

__all__ = ["BundleSource", "ConnectClient", "Peer"]

_tokens = itertools.count(1)


class BundleSource(Protocol):
    @property
    def bundle(self) -> Bundle: ...

    @property
    def pending(self) -> concurrent.futures.Future[Bundle] | None: ...

    def subscribe(self, callback: Any) -> None: ...


class Peer:
    """The identity one upstream service must present (an ``extensions.ConnectPeer``).

    It is built before the first certificate has arrived (a call may start at once), so
    everything that needs the bundle is read when a connection is opened, after ``pending``.
    """

    __slots__ = ("_client", "key", "service")

    def __init__(self, client: ConnectClient, service: str) -> None:
        self._client = client
        self.service = service
        # Connections are pooled per endpoint, per identity called and per identity calling:
        # a connection set up with one client's certificate never carries another's calls.
        self.key = f"{client.token}:{service}"

    @property
    def expected(self) -> SpiffeID:
        """The SPIFFE ID the server must present: ``service`` in our trust domain."""
        mine = self._client.identity
        return SpiffeID(
            trust_domain=self._client.trust_domain,
            datacenter=mine.datacenter,
            service=self.service,
            namespace=mine.namespace,
            partition=mine.partition,
        )

    @property
    def server_hostname(self) -> str:
        e = self.expected
        return f"{e.service}.{e.namespace}.{e.datacenter}.internal.{e.trust_domain}"

    def pending(self) -> concurrent.futures.Future[Any] | None:
        return self._client.pending()

    def context(self) -> ssl.SSLContext:
        return self._client.context()

    def check(self, peercert: dict[str, Any] | None) -> str | None:
        uris = peer_uris(peercert)
        expected = self.expected
        for uri in uris:
            sid = parse_spiffe_id(uri)
            if sid is not None and sid.same_service(expected):
                return None
        shown = ", ".join(uris) if uris else "no SPIFFE URI"
        return f"the server presented {shown}; calling {self.service!r} needs {expected.uri}"


class ConnectClient:
    """Client TLS for every Connect upstream, kept current with the certificate bundle."""

    def __init__(self, source: BundleSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._peers: dict[str, Peer] = {}
        self.token = next(_tokens)
        source.subscribe(self._rotated)

    def _rotated(self, bundle: Bundle) -> None:
        fresh = _context_for(bundle)
        with self._lock:
            self._context = fresh

    def pending(self) -> concurrent.futures.Future[Any] | None:
        """The first certificate's future while it has not arrived (await it, bounded)."""
        return self._source.pending

    @property
    def identity(self) -> SpiffeID:
        return self._source.bundle.identity

    @property
    def trust_domain(self) -> str:
        return self._source.bundle.trust_domain

    def context(self) -> ssl.SSLContext:
        ctx = self._context
        if ctx is None:
            with self._lock:
                if self._context is None:
                    self._context = _context_for(self._source.bundle)
                ctx = self._context
        return ctx

    def peer(self, service: str) -> Peer:
        """The ``Peer`` for calls to ``service`` (cheap: no certificate is needed yet)."""
        peer = self._peers.get(service)
        if peer is None:
            if len(self._peers) >= 4096:  # service names come from callers' URLs
                self._peers.clear()
            peer = self._peers[service] = Peer(self, service)
        return peer


def _context_for(bundle: Bundle) -> ssl.SSLContext:
    return client_context(bundle.leaf.cert_pem, bundle.leaf.key_pem, bundle.roots.pems)
