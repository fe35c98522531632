"""The discovery contract: a non-blocking snapshot per service, refreshed behind the scenes.

The request path must not wait on a registry. Every discovery therefore answers ``lookup``
from memory in O(1), and only the *first* use of a service may wait (``resolve`` /
``resolve_sync``) while its endpoints are fetched. A ``Resolution`` is immutable: the transport
compares it by identity to notice an update, so an unchanged registry costs one pointer check
per request.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlib.endpoint import Endpoint

if TYPE_CHECKING:
    from meshlib.traffic.chain import Chain

__all__ = ["Discovery", "Resolution", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL host names: a service, optionally narrowed by tag and datacenter.

    ``subset`` is set only by traffic management (a resolver subset chosen for a request);
    discovery is always asked for the target without it, and the router filters."""

    service: str
    tag: str | None = None
    dc: str | None = None
    subset: str | None = None

    def __str__(self) -> str:
        text = self.service if self.tag is None else f"{self.tag}.{self.service}"
        if self.subset is not None:
            text = f"{text} (subset {self.subset})"
        return text if self.dc is None else f"{text} (dc {self.dc})"


@dataclass(frozen=True, slots=True)
class Resolution:
    """One service's endpoints as last known, and where they came from."""

    target: Target
    endpoints: tuple[Endpoint, ...]
    source: str
    updated_at: float
    """Clock time of the answer these endpoints came from (staleness is measured from it)."""
    stale: bool = False
    """True while the source is failing and these are the last known good endpoints."""
    connect: bool = False
    """True when these are Consul Connect endpoints (``/v1/health/connect``): every attempt
    goes over Connect mutual TLS to the service's identity."""


class Discovery(abc.ABC):
    """Base class for discoveries; subclasses fill in the lookups and say where they looked."""

    @abc.abstractmethod
    def lookup(self, target: Target) -> Resolution | None:
        """The current snapshot, or None if the service is unknown or not fetched yet. No I/O."""

    def current(self, target: Target) -> Resolution | None:
        """The snapshot as the discovery holds it now, for gauges: no I/O, and unlike
        ``lookup`` it neither counts as a use (a metrics scrape keeps no watch alive) nor
        enforces a staleness bound. Defaults to ``lookup``."""
        return self.lookup(target)

    async def resolve(self, target: Target) -> Resolution | None:
        """Like ``lookup`` but may wait for a first answer; None means the service is unknown."""
        return self.lookup(target)

    def resolve_sync(self, target: Target) -> Resolution | None:
        """The blocking twin of ``resolve`` for the sync transport."""
        return self.lookup(target)

    def chain(self, target: Target) -> Chain | None:
        """The target's discovery chain when traffic management applies to it, else None
        (the service is used as it is). No I/O: answered from memory on every request."""
        return None

    async def resolve_chain(self, target: Target) -> Chain | None:
        """Like ``chain`` but may wait for a first answer (called on a target's first use)."""
        return self.chain(target)

    def resolve_chain_sync(self, target: Target) -> Chain | None:
        """The blocking twin of ``resolve_chain``."""
        return self.chain(target)

    def declares(self, host: str) -> bool:
        """True if ``host`` is a name this discovery declares (addressing rule (c))."""
        return False

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this discovery looks, for error messages ("static: MESH_STATIC_ENDPOINTS")."""

    def close(self) -> None:  # noqa: B027 - optional hook; most discoveries hold nothing
        """Release background resources (watches, files); idempotent."""

    async def aclose(self) -> None:
        """Async twin of ``close``."""
        self.close()
