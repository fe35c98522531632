"""Consul Connect service identities: the SPIFFE IDs in leaf certificates, parsed and checked.

Consul's built-in CA puts one URI SAN in every service's leaf certificate,
``spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`` (with
``/ap/<partition>`` before ``/ns`` for a non-default admin partition), and that URI is the
service's identity: a Connect client calling ``users`` must find ``/svc/users`` under the
cluster's trust domain in the server's certificate, and a server authorizes its caller by the
URI in the client's certificate (agent/connect/uri_service.go).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SpiffeID", "parse_spiffe_id"]

_SERVICE = re.compile(
    r"^spiffe://(?P<td>[^/]+)(?:/ap/(?P<ap>[^/]+))?/ns/(?P<ns>[^/]+)/dc/(?P<dc>[^/]+)"
    r"/svc/(?P<svc>[^/]+)$"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpiffeID:
    """A Connect service identity."""

    trust_domain: str
    datacenter: str
    service: str
    namespace: str = "default"
    partition: str = "default"

    @property
    def uri(self) -> str:
        ap = "" if self.partition == "default" else f"/ap/{self.partition}"
        return (
            f"spiffe://{self.trust_domain}{ap}/ns/{self.namespace}/dc/{self.datacenter}"
            f"/svc/{self.service}"
        )

    def same_service(self, other: SpiffeID) -> bool:
        """Same service in the same cluster and namespace, in any datacenter (Consul's rule:
        the datacenter in the URI is where the certificate was issued, not an authority)."""
        return (
            self.trust_domain.lower() == other.trust_domain.lower()
            and self.service == other.service
            and self.namespace == other.namespace
            and self.partition == other.partition
        )

    def __str__(self) -> str:
        return self.uri


def parse_spiffe_id(uri: str) -> SpiffeID | None:
    """The service identity in ``uri``, or None if it is not a Connect service URI."""
    m = _SERVICE.match(uri)
    if m is None:
        return None
    return SpiffeID(
        trust_domain=m["td"],
        partition=m["ap"] or "default",
        namespace=m["ns"],
        datacenter=m["dc"],
        service=m["svc"],
    )
