"""The request extension keys meshlib's layers agree on, so no layer imports another for a name.

httpx carries per-request data between a client and its transports in ``request.extensions``;
meshlib uses a few keys of its own. The pipeline writes them and the engine or the pipeline reads
them, so the names live here, in L0, rather than in either layer.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # a type only: the Consul and Connect machinery that uses it loads it
    import concurrent.futures

__all__ = [
    "ATTEMPT_HEADERS",
    "CONNECT",
    "DEADLINE",
    "OVERRIDE",
    "POLICY",
    "PREFETCH",
    "ConnectPeer",
    "ConnectPeers",
]

POLICY = "mesh"
"""Per-request options (a ``CallPolicy`` or a dict); on a response, which endpoint answered."""

PREFETCH = "mesh_prefetch"
"""Set by the mesh clients when the caller does not stream: the body is read inside the retry
loop, where a reset mid-body can still be retried."""

DEADLINE = "mesh_deadline"
"""The attempt's absolute deadline on ``time.monotonic()``, for the engines to bound it by."""

ATTEMPT_HEADERS = "mesh_attempt_headers"
"""Headers for one attempt only (deadline, trace context), which meshlib's engine writes on the
wire in place of any header of the same name, so the caller's request is never changed."""

OVERRIDE = "mesh_override"
"""Pins a call to a subset: ``{"users": "canary"}`` or ``"users=canary"`` (traffic management;
the ``Mesh-Override`` header says the same)."""

CONNECT = "mesh_connect"
"""A ``ConnectPeer``: the attempt goes over Consul Connect mutual TLS to that identity."""


class ConnectPeer(Protocol):
    """What an engine needs to open a Connect connection (``meshlib.connect`` provides it)."""

    key: str
    """Names the identity expected; connections are pooled per endpoint and identity."""

    @property
    def server_hostname(self) -> str:
        """The TLS server name to send (Envoy sidecars route on it); read after ``pending``."""

    def pending(self) -> concurrent.futures.Future[Any] | None:
        """While the first certificate is on its way, a future to wait on (bounded), else None."""

    def context(self) -> ssl.SSLContext:
        """The current client context: our leaf, the current roots, peer certificate required."""

    def check(self, peercert: dict[str, Any] | None) -> str | None:
        """None if the server's certificate names the expected identity, else why not."""


class ConnectPeers(Protocol):
    """Hands out the ``ConnectPeer`` for each upstream service (``connect.ConnectClient``)."""

    def peer(self, service: str) -> ConnectPeer:
        """The identity calls to ``service`` must reach (cheap; called once per call)."""
