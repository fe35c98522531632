"""Traffic management in the router: a chain's choice turned into the endpoint set of one call.

For a service whose discovery chain applies, every request is matched against the routes and
split by weight (``meshlib.traffic.chain``), and the chosen target names a service, a
datacenter and a subset. The endpoint set of a subset is the service's own set filtered by
the subset's expression, and shares its endpoints' states (load, failure accrual), so the
balancer's learning and ejections count the same whichever route reached an endpoint. The
filtered set is built once per change of either the chain or the service's endpoints and
cached by target ID, so a request costs a dictionary read and two identity checks.

Failover follows Consul's resolver: when the chosen target has no available endpoint (none
match, or every match is ejected by failure accrual), its failover targets are tried in
order and the first with an available endpoint takes the call; with none, the call goes to
the chosen target and fails there with ``NoEndpointsAvailable`` naming it.

The per-request override (``Mesh-Override: <service>=<subset>``, or the ``mesh_override``
extension, or the value the inbound middleware propagated: ``meshlib.scope.override``) pins
the call to a subset the chain knows, bypassing routes and splits, for testing in production
in the spirit of Linkerd's ``l5d-dtab``. A subset the chain does not reach fails the call
with ``NoEndpointsAvailable`` naming the subsets it does reach, rather than silently
ignoring the pin.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from meshlib.balance.balancer import EndpointSet
from meshlib.clock import Clock
from meshlib.discovery.base import Target
from meshlib.errors import NoEndpointsAvailable
from meshlib.extensions import OVERRIDE
from meshlib.routing.state import ServiceState
from meshlib.scope.override import OVERRIDE_HEADER, current_override
from meshlib.traffic.chain import Chain, ChainTarget, Choice

__all__ = ["OVERRIDE_HEADER", "Chains", "parse_override"]


def parse_override(value: Any) -> dict[str, str]:
    """``"users=canary, orders=v2"`` (or a mapping) → ``{"users": "canary", ...}``; raises
    ``ValueError`` naming the malformed part."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        service, sep, subset = part.partition("=")
        if not sep or not service.strip() or not subset.strip():
            raise ValueError(
                f"mesh override {part!r} must look like <service>=<subset>, e.g. users=canary"
            )
        out[service.strip().lower()] = subset.strip()
    return out


_OVERRIDE_KEY = OVERRIDE_HEADER.encode("ascii")
_NONE: Mapping[str, str] = {}


def _header(headers: Any, key: bytes) -> str | None:
    """One header by its lower-cased name. httpx's ``Headers.get`` lower-cases and encodes the
    name and decodes every value on each call (several µs); its internal list already holds
    lower-cased names, so it is scanned directly when present."""
    items = getattr(headers, "_list", None)
    if items is None:
        value: str | None = headers.get(key.decode("ascii"))
        return value
    for _, name, value_bytes in items:
        if name == key:
            return str(value_bytes.decode("latin-1"))
    return None


def _headers(headers: Any, wanted: frozenset[bytes]) -> dict[str, str]:
    """The ``wanted`` headers by lower-cased name (repeated ones joined with ", ", as httpx
    does); the others are not decoded."""
    items = getattr(headers, "_list", None)
    if items is None:
        return {k.lower(): v for k, v in headers.items()}
    out: dict[str, str] = {}
    for _, name, raw in items:
        if name in wanted:
            key, value = name.decode("latin-1"), raw.decode("latin-1")
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _path_query(url: Any, chain: Chain) -> tuple[str, Mapping[str, str]]:
    """The path as sent (percent-encoding kept, without the query: what Envoy matches) if the
    chain's routes test it, and the query parameters if they test those and there are any.
    httpx keeps the URL parsed; ``raw_path`` would rebuild path and query as bytes."""
    ref = getattr(url, "_uri_reference", None)
    if ref is None:  # not an httpx URL: parse what is needed
        raw = str(url.raw_path.decode("ascii", "replace"))
        path, _, q = raw.partition("?")
        return path or "/", url.params if chain.uses_query and q else _NONE
    path = (ref.path or "/") if chain.uses_path else ""
    return path, url.params if chain.uses_query and ref.query else _NONE


_NO_URL: tuple[str, Mapping[str, str]] = ("", _NONE)


class _Router(Protocol):
    """What ``Chains`` needs of the router (which owns it)."""

    clock: Clock
    rng: random.Random
    zones: Any
    discovery: Any

    def service(self, target: Target) -> ServiceState | None: ...

    async def resolve(self, target: Target) -> ServiceState: ...

    def resolve_sync(self, target: Target) -> ServiceState: ...

    def share_group(self, base: Target, subset: Target) -> None: ...

    def round_robin(self) -> Any: ...


class _Entry:
    __slots__ = ("base", "base_target", "chain_target", "state")

    def __init__(self, chain_target: ChainTarget, base: ServiceState, state: ServiceState):
        self.chain_target = chain_target
        self.base = base
        self.base_target = base.target
        self.state = state


class Chains:
    """The router's traffic-management half (see the module docstring)."""

    def __init__(self, router: _Router) -> None:
        self._router = router
        self._rng = router.rng
        self._cache: dict[str, _Entry] = {}
        self._headers_for: tuple[Chain, frozenset[bytes]] | None = None

    def choose(self, chain: Chain, request: Any) -> Choice:
        """The route, split and target for one request (and the override, if any). Only what
        the chain's routes test is extracted from the request."""
        headers: Mapping[str, str] = _NONE
        pin = request.extensions.get(OVERRIDE)
        if pin is None:
            if chain.uses_headers:  # one pass over the headers serves the routes and the pin
                headers = _headers(request.headers, self._wanted(chain))
                pin = headers.get(OVERRIDE_HEADER)
            else:
                pin = _header(request.headers, _OVERRIDE_KEY)
            pin = pin or current_override()
        if pin:
            pinned = self._pinned(chain, pin)
            if pinned is not None:
                return Choice(pinned, None)
        path, query = _path_query(request.url, chain) if chain.uses_url else _NO_URL
        u = self._rng.random() if chain.splits else 0.0
        return chain.choose(request.method, path, headers, query, u)

    def plan(self, chain: Chain, request: Any) -> tuple[ServiceState | None, Choice]:
        """``choose`` then ``state`` in one step; the common case (a target without failover
        whose service's endpoints have not changed) is one cache read and one discovery
        lookup compared by identity."""
        choice = self.choose(chain, request)
        t = choice.target
        entry = self._cache.get(t.id)
        if (
            entry is not None
            and entry.chain_target is t
            and not t.failover
            and self._router.discovery.lookup(entry.base_target) is entry.base.resolution
        ):
            return entry.state, choice
        return self.state(choice), choice

    def _wanted(self, chain: Chain) -> frozenset[bytes]:
        """The headers to decode for ``chain``: its routes' and the override (made once)."""
        cached = self._headers_for
        if cached is not None and cached[0] is chain:
            return cached[1]
        wanted = chain.header_names | {_OVERRIDE_KEY}
        self._headers_for = (chain, wanted)
        return wanted

    def _pinned(self, chain: Chain, pin: Any) -> ChainTarget | None:
        try:
            subset = parse_override(pin).get(chain.service)
        except ValueError as exc:
            raise NoEndpointsAvailable(str(exc)) from None
        if subset is None:
            return None
        found = chain.subset_target(chain.service, subset)
        if found is None:
            known = sorted({t.subset for t in chain.targets.values() if t.subset})
            raise NoEndpointsAvailable(
                f"mesh override pins {chain.service!r} to subset {subset!r}, which its "
                f"discovery chain does not reach; known subsets: {', '.join(known) or 'none'}"
            )
        return found

    # -- endpoint sets -----------------------------------------------------------------------

    @staticmethod
    def base_target(t: ChainTarget) -> Target:
        return Target(t.service, dc=t.dc)

    def state(self, choice: Choice) -> ServiceState | None:
        """The endpoint set for ``choice`` after failover; None if a service it needs is not
        known yet (the caller then awaits ``resolve``). No I/O."""
        primary = self._subset(choice.target)
        if primary is None:
            return None
        if not choice.target.failover or self._available(primary):
            return primary
        for t in choice.target.failover:
            st = self._subset(t)
            if st is None:
                return None
            if self._available(st):
                return st
        return primary

    async def resolve(self, choice: Choice) -> ServiceState:
        for t in (choice.target, *choice.target.failover):
            base = self.base_target(t)
            if self._router.service(base) is None:
                await self._router.resolve(base)
            st = self.state(choice)
            if st is not None:
                return st
        raise self._unknown(choice)

    def resolve_sync(self, choice: Choice) -> ServiceState:
        for t in (choice.target, *choice.target.failover):
            base = self.base_target(t)
            if self._router.service(base) is None:
                self._router.resolve_sync(base)
            st = self.state(choice)
            if st is not None:
                return st
        raise self._unknown(choice)

    @staticmethod
    def _unknown(choice: Choice) -> NoEndpointsAvailable:
        return NoEndpointsAvailable(f"no endpoints for chain target {choice.target.id!r}")

    def _available(self, state: ServiceState) -> bool:
        now = self._router.clock.now()
        return any(st.available(now) for st in state.eps.states)

    def _subset(self, t: ChainTarget) -> ServiceState | None:
        entry = self._cache.get(t.id)
        base = self._router.service(entry.base_target if entry is not None else self.base_target(t))
        if base is None:
            return None
        if entry is not None and entry.chain_target is t and entry.base is base:
            return entry.state
        return self._build(t, base)

    def _build(self, t: ChainTarget, base: ServiceState) -> ServiceState:
        target = Target(t.service, dc=t.dc, subset=t.subset)
        balancer = self._router.round_robin() if t.balancer == "round-robin" else None
        if t.subset is None and t.predicate is None and not t.refused:
            state = ServiceState(target, base.resolution, base.eps, balancer)
        else:
            kept = [st for st in base.eps.states if t.admits(st.endpoint)]
            state = ServiceState(target, base.resolution, EndpointSet(kept), balancer)
        self._router.share_group(self.base_target(t), target)
        self._cache[t.id] = _Entry(t, base, state)
        return state

    def snapshot(self) -> dict[str, Any]:
        """Per chain target in use: its service, subset and endpoints (for ``mesh_state()``)."""
        zones = self._router.zones
        out: dict[str, Any] = {}
        for tid, e in list(self._cache.items()):
            eps = [st.address for st in e.state.eps.states]
            out[tid] = {**e.chain_target.describe(), "endpoints": eps}
            if zones is not None:
                out[tid]["zones"] = zones.describe(e.state)
        return out
