"""Consul Connect, natively: service identities, mutual TLS and intentions, with no sidecar.

``identity`` parses the SPIFFE IDs in Connect leaf certificates; ``tls`` builds the mutual-TLS
contexts in memory from the local agent's PEM answers and keeps a server's context current
through rotation. Imports L0 and ``consul``: L1.
"""

from typing import TYPE_CHECKING, Any

from meshlib import lazy

_EXPORTS = {
    "RotatingServerContext": "tls",
    "SpiffeID": "identity",
    "client_context": "tls",
    "parse_spiffe_id": "identity",
    "peer_uris": "tls",
    "server_context": "tls",
}

if TYPE_CHECKING:
    from meshlib.connect.identity import SpiffeID, parse_spiffe_id
    from meshlib.connect.tls import RotatingServerContext, client_context, peer_uris, server_context

__all__ = [
    "RotatingServerContext",
    "SpiffeID",
    "client_context",
    "parse_spiffe_id",
    "peer_uris",
    "server_context",
]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
