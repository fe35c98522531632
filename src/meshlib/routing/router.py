"""Routing state shared by the sync and async transports: services, their endpoints and picks.

The router turns a URL host into a mesh target (``addressing``), a target into the service's
current ``EndpointSet`` (``discovery``), and a set into one endpoint per attempt (``balancer``).
It keeps each endpoint's load metric across discovery updates, keyed by address, so a registry
change never resets what the balancer has learned. It does no I/O except through the
discovery's first-use ``resolve`` and is shared, unchanged, by both drivers.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from meshlib.accrual.health import AccrualPolicy, EndpointHealth, HealthGroup
from meshlib.balance.balancer import Balancer, EndpointSet, EndpointState, RoundRobin
from meshlib.clock import Clock
from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.errors import NoEndpointsAvailable
from meshlib.load.stats import EndpointStats
from meshlib.routing.addressing import Addressing
from meshlib.routing.locality import LocalityPolicy, Zones
from meshlib.routing.state import ServiceState

if TYPE_CHECKING:  # the traffic machinery loads with the first discovery chain
    from meshlib.routing.chains import Chains
    from meshlib.traffic.chain import Chain

__all__ = ["Router", "ServiceState"]  # ServiceState lives in ``state``


class Router:
    """Addressing + discovery + balancer, with per-endpoint state that survives updates."""

    def __init__(
        self,
        *,
        discovery: Discovery,
        balancer: Balancer,
        clock: Clock,
        addressing: Addressing,
        accrual: AccrualPolicy | None = None,
        rng: random.Random | None = None,
        locality: LocalityPolicy | None = None,
    ) -> None:
        self.discovery = discovery
        self.accrual = accrual if accrual is not None else AccrualPolicy()
        self._rng = self.rng = rng or random.Random()
        self._groups: dict[Target, HealthGroup] = {}
        self.on_breaker: Callable[[Target, EndpointHealth, str, str], None] | None = None
        """Called on every accrual state change (metrics)."""
        self.on_update: Callable[[Target], None] | None = None
        """Called when a new endpoint set from discovery is applied (metrics)."""
        self.balancer = balancer
        self.clock = clock
        self.addressing = addressing
        self._services: dict[Target, ServiceState] = {}
        self._apply_lock = threading.Lock()
        self._endpoints: dict[Target, dict[str, EndpointState]] = {}
        self._round_robin: Balancer | None = None
        self.zones = Zones(locality) if locality is not None else None
        """Zone-aware picks (``locality``), when the caller's zone is configured."""
        self._chains: Chains | None = None

    @property
    def chains(self) -> Chains:
        """Traffic management: routes, splits and subsets per request (``chains``), built on
        first use, so a process whose services have no discovery chain never imports it."""
        chains = self._chains
        if chains is None:
            from meshlib.routing.chains import Chains

            chains = self._chains = Chains(self)
        return chains

    def target(self, host: str) -> Target | None:
        """The mesh target a URL host names, or None for pass-through hosts."""
        return self.addressing.target(host)

    def service(self, target: Target) -> ServiceState | None:
        """The target's state if discovery already knows it (no I/O); refreshed on change."""
        res = self.discovery.lookup(target)
        if res is None:
            return None
        state = self._services.get(target)
        if state is not None and state.resolution is res:
            return state
        return self._apply(target, res)

    def chain(self, target: Target) -> Chain | None:
        """The target's discovery chain, if traffic management applies to it (no I/O)."""
        return self.discovery.chain(target)

    async def resolve(self, target: Target) -> ServiceState:
        """Like ``service`` but waits for discovery's first answer (endpoints and chain);
        raises if unknown."""
        state = self.service(target)
        if state is not None:
            return state
        res = await self.discovery.resolve(target)
        chain = await self.discovery.resolve_chain(target)
        return self._known(target, res, chain)

    def resolve_sync(self, target: Target) -> ServiceState:
        """Blocking twin of ``resolve``."""
        state = self.service(target)
        if state is not None:
            return state
        res = self.discovery.resolve_sync(target)
        return self._known(target, res, self.discovery.resolve_chain_sync(target))

    def share_group(self, base: Target, subset: Target) -> None:
        """A subset's endpoints are its service's: panic mode is judged on the service."""
        group = self._groups.get(base)
        if group is not None:
            self._groups[subset] = group

    def _known(self, target: Target, res: Resolution | None, chain: Chain | None) -> ServiceState:
        if res is None and chain is not None:
            # Only a chain names it (a redirect, say): it has no endpoints of its own.
            res = Resolution(target, (), self.discovery.describe(), self.clock.now())
        if res is None:
            raise NoEndpointsAvailable(
                f"no endpoints for mesh service {str(target)!r}: it is unknown to "
                f"{self.discovery.describe()}. Declare it there, or list the host in "
                "MESH_PASSTHROUGH_HOSTS if it is not a mesh service."
            )
        return self._apply(target, res)

    def _apply(self, target: Target, res: Resolution) -> ServiceState:
        """The service's state for a new resolution. Threads that see the same change at once
        (the first calls from a shared ``MeshClient``) apply it once: two appliers would each
        make endpoint states and a health group, and the calls holding the losers' copies would
        feed accrual and the balancer state that no one reads."""
        with self._apply_lock:
            state = self._services.get(target)
            if state is not None and state.resolution is res:
                return state
            return self._apply_locked(target, res)

    def _apply_locked(self, target: Target, res: Resolution) -> ServiceState:
        now = self.clock.now()
        old = self._endpoints.get(target, {})
        group = self._groups.get(target)
        if group is None:
            group = self._groups[target] = HealthGroup(self.accrual, self._rng)
            group.on_change = self._watcher(target, group)
        kept: dict[str, EndpointState] = {}
        for endpoint in res.endpoints:
            st = old.get(endpoint.address)
            if st is None or st.endpoint != endpoint:
                # A changed weight, tag set or meta makes a new state but keeps what was learned.
                metric = st.metric if st is not None else self.balancer.new_metric(now)
                health = st.health if st is not None else EndpointHealth(group, endpoint.address)
                stats = st.stats if st is not None else EndpointStats(now)
                st = EndpointState(endpoint, metric, health, stats)
            kept[endpoint.address] = st
        self._endpoints[target] = kept
        group.members = [st.health for st in kept.values() if isinstance(st.health, EndpointHealth)]
        states = list(kept.values())
        state = ServiceState(target, res, EndpointSet(states))
        if target in self._services and self.on_update is not None:
            self.on_update(target)
        self._services[target] = state
        return state

    def pick(
        self, state: ServiceState, avoid: EndpointState | None = None, now: float | None = None
    ) -> EndpointState:
        """One endpoint for an attempt; raises ``NoEndpointsAvailable`` when the set is empty.
        ``now`` is the clock's reading if the caller has just taken it."""
        if not state.eps.states:
            raise NoEndpointsAvailable(
                f"no endpoints for mesh service {str(state.target)!r}: "
                f"{state.resolution.source} lists none"
            )
        group = self._groups.get(state.target)
        panic = group is not None and group.panic()
        now = self.clock.now() if now is None else now
        zones = self.zones
        eps = state.eps if zones is None else zones.choose(state, now)
        return (state.balancer or self.balancer).pick(eps, now, avoid, panic)

    def round_robin(self) -> Balancer:
        """The round-robin balancer for targets whose resolver asks for it (made once)."""
        if self._round_robin is None:
            self._round_robin = RoundRobin()
        return self._round_robin

    def _watcher(
        self, target: Target, group: HealthGroup
    ) -> Callable[[EndpointHealth, str, str], None]:
        """Log each accrual state change once, count it, and log panic mode entering/leaving."""
        log_change = _logger_for(target)
        panic = [False]

        def on_change(health: EndpointHealth, old: str, new: str) -> None:
            log_change(health, old, new)
            if self.on_breaker is not None:
                self.on_breaker(target, health, old, new)
            now_panic = group.panic()
            if now_panic != panic[0]:
                panic[0] = now_panic
                log.log(
                    logging.WARNING if now_panic else logging.INFO,
                    "service %s: panic mode %s (%d of %d endpoints dead)",
                    target,
                    "on: balancing over all endpoints" if now_panic else "off",
                    group.dead_count(),
                    len(group.members),
                    extra={"service": str(target), "outcome": "panic" if now_panic else "calm"},
                )

        return on_change

    def services(self) -> Iterator[ServiceState]:
        """Every service used so far, for state snapshots."""
        return iter(list(self._services.values()))


log = logging.getLogger("meshlib.accrual")
_WORDS = {"dead": "ejected", "probing": "probing", "alive": "revived"}


def _logger_for(target: Target) -> Callable[[EndpointHealth, str, str], None]:
    """Log each accrual state change once (never once per request)."""

    def on_change(health: EndpointHealth, old: str, new: str) -> None:
        if new == "dead" and old == "probing":
            word = "probe failed; ejected again"
        else:
            word = _WORDS.get(new, new)
        log.log(
            logging.WARNING if new == "dead" else logging.INFO,
            "service %s: endpoint %s %s",
            target,
            health.address,
            word,
            extra={"service": str(target), "endpoint": health.address, "outcome": new},
        )

    return on_change
