"""Choosing one endpoint per attempt: P2C over a load metric (default), or round robin.

Power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
2001) samples two endpoints and takes the less loaded one: nearly the quality of "least loaded
of all" at O(1) cost and without herding onto one endpoint. Finagle's default and
linkerd2-proxy both use it over Peak-EWMA (see ``load``). Weights bias the *sampling* (Vose's
alias method, O(1) per draw), so equally loaded endpoints receive traffic in proportion to
their weight.

Health is readable state: before spending an attempt the balancer skips endpoints whose failure
accrual says they are dead, re-picking up to ``MAX_EFFORT`` times (Finagle's maxEffort 5).
**Panic mode** (Finagle, Envoy): when more than half of a service's endpoints are unavailable the
caller says so (``panic=True``) and the balancer spreads traffic over all of them by weight,
ignoring health *and* load (the dead ones' load scores carry their failures, so a load-aware
pick would still pile everything on the survivors). Every pick, in every balancer and in panic
mode too, goes through the endpoint's ``admit``, so a dead endpoint whose backoff has passed is
probed, and a service's only endpoint recovers like any other.

Everything here is I/O-free and shared by the sync and async transports.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from meshlib.endpoint import Endpoint
from meshlib.load.metric import LeastLoaded, LoadMetric, PeakEwma
from meshlib.load.stats import EndpointStats

__all__ = [
    "BALANCERS",
    "MAX_EFFORT",
    "P2C",
    "Balancer",
    "EndpointSet",
    "EndpointState",
    "Health",
    "RoundRobin",
    "make_balancer",
]

MAX_EFFORT = 5


class Health(Protocol):
    """What the balancer asks of an endpoint's failure accrual (see ``accrual``)."""

    def available(self, now: float) -> bool: ...

    def admit(self, now: float) -> bool: ...

    def record(self, now: float, *, failure: bool, probe: bool = False) -> None: ...

    def release(self) -> None: ...


class EndpointState:
    """An endpoint with the state that must survive discovery updates: its load and health."""

    __slots__ = ("address", "endpoint", "health", "metric", "stats")

    def __init__(
        self,
        endpoint: Endpoint,
        metric: LoadMetric,
        health: Health | None = None,
        stats: EndpointStats | None = None,
    ):
        self.endpoint = endpoint
        self.address = endpoint.address
        self.metric = metric
        self.health = health
        self.stats = stats if stats is not None else EndpointStats()

    def available(self, now: float) -> bool:
        """Usable now, without side effects (for counting live endpoints)."""
        health = self.health
        return health is None or health.available(now)

    def admit(self, now: float) -> bool:
        """Usable for this attempt; claims the single probe slot of a dead endpoint."""
        health = self.health
        return health is None or health.admit(now)

    def __repr__(self) -> str:
        return f"EndpointState({self.address})"


class EndpointSet:
    """An immutable list of endpoint states with an O(1) weighted sampler."""

    __slots__ = ("_alias", "_n", "_prob", "states", "uniform")

    def __init__(self, states: Sequence[EndpointState]) -> None:
        self.states: tuple[EndpointState, ...] = tuple(states)
        self._n = len(self.states)
        weights = [s.endpoint.weight for s in self.states]
        self.uniform = len(set(weights)) <= 1
        self._prob: list[float] = []
        self._alias: list[int] = []
        if not self.uniform:
            self._prob, self._alias = _vose(weights)

    def __len__(self) -> int:
        return self._n

    def sample(self, rng: random.Random) -> int:
        """Draw an index with probability proportional to its endpoint's weight, in O(1)."""
        if self.uniform:
            return int(rng.random() * self._n)
        i = int(rng.random() * self._n)
        return i if rng.random() < self._prob[i] else self._alias[i]


def _vose(weights: Sequence[float]) -> tuple[list[float], list[int]]:
    """Vose's alias tables for ``weights``: O(n) to build, O(1) to sample."""
    n = len(weights)
    total = sum(weights)
    scaled = [w * n / total for w in weights]
    prob = [0.0] * n
    alias = [0] * n
    small = [i for i, w in enumerate(scaled) if w < 1.0]
    large = [i for i, w in enumerate(scaled) if w >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    for i in large + small:
        prob[i] = 1.0
    return prob, alias


class Balancer(Protocol):
    """Picks one endpoint for an attempt; ``avoid`` is the endpoint the last attempt failed on."""

    name: str

    def new_metric(self, now: float) -> LoadMetric: ...

    def pick(
        self,
        eps: EndpointSet,
        now: float,
        avoid: EndpointState | None = None,
        panic: bool = False,
    ) -> EndpointState: ...


def _health_ignored(
    draw: Callable[[], EndpointState], now: float, avoid: EndpointState | None
) -> EndpointState:
    """Panic mode (or a lone endpoint): the balancer's own draw with health ignored, away from
    the last endpoint if a second draw allows; ``admit`` still runs, so a dead endpoint that is
    due gets its probe (whose outcome can revive it)."""
    chosen = draw()
    if chosen is avoid:
        chosen = draw()
    chosen.admit(now)
    return chosen


class P2C:
    """Power of two choices over a load metric, skipping dead endpoints (see module docstring)."""

    def __init__(
        self,
        *,
        metric: str = "peak-ewma",
        decay: float = 10.0,
        default_rtt: float = 0.030,
        rng: random.Random | None = None,
    ) -> None:
        if metric not in ("peak-ewma", "least-loaded"):
            raise ValueError(f"P2C metric must be 'peak-ewma' or 'least-loaded', got {metric!r}")
        self.name = "p2c-peak-ewma" if metric == "peak-ewma" else "p2c-least-loaded"
        self._ewma = metric == "peak-ewma"
        self._decay = decay
        self._default_rtt = default_rtt
        self._rng = rng or random.Random()

    def new_metric(self, now: float) -> LoadMetric:
        if self._ewma:
            return PeakEwma(decay=self._decay, default_rtt=self._default_rtt, now=now)
        return LeastLoaded(decay=self._decay, now=now)

    def _two(self, eps: EndpointSet, now: float) -> EndpointState:
        states = eps.states
        rng = self._rng
        a = eps.sample(rng)
        b = eps.sample(rng)
        if a == b and eps.uniform:
            # Equal weights: two distinct choices, as Finagle draws them. With unequal weights
            # the draws stay independent, which makes the share exactly proportional to weight
            # when loads are equal (a forced second choice would dilute heavy endpoints).
            b = (a + 1 + int(rng.random() * (len(states) - 1))) % len(states)
        sa, sb = states[a], states[b]
        if sa is sb:
            return sa
        la, lb = sa.metric.load(now), sb.metric.load(now)
        if la == lb:
            return sa if rng.random() < 0.5 else sb
        return sa if la < lb else sb

    def pick(
        self,
        eps: EndpointSet,
        now: float,
        avoid: EndpointState | None = None,
        panic: bool = False,
    ) -> EndpointState:
        if panic or len(eps.states) == 1:
            # By weight alone: the dead endpoints' load scores carry their failures.
            states, rng = eps.states, self._rng
            return _health_ignored(lambda: states[eps.sample(rng)], now, avoid)
        for _ in range(MAX_EFFORT):
            chosen = self._two(eps, now)
            if chosen is not avoid and chosen.admit(now):
                return chosen
        return _fallback(eps, now, avoid, lambda: self._two(eps, now))


class RoundRobin:
    """Weighted round robin (nginx's smooth schedule, precomputed per endpoint set).

    Kept as the baseline the demo and benchmarks compare against, and for users who want
    predictable spreading. The schedule is built once per endpoint set so a pick stays O(1).
    """

    name = "round-robin"

    def __init__(self, *, decay: float = 10.0) -> None:
        self._decay = decay
        self._next = 0
        self._schedules: dict[int, tuple[EndpointSet, list[int]]] = {}

    def new_metric(self, now: float) -> LoadMetric:
        return LeastLoaded(decay=self._decay, now=now)

    def _schedule(self, eps: EndpointSet) -> list[int]:
        cached = self._schedules.get(id(eps))
        if cached is not None and cached[0] is eps:
            return cached[1]
        schedule = _smooth_schedule([s.endpoint.weight for s in eps.states])
        if len(self._schedules) > 1024:
            self._schedules.clear()
        self._schedules[id(eps)] = (eps, schedule)
        return schedule

    def pick(
        self,
        eps: EndpointSet,
        now: float,
        avoid: EndpointState | None = None,
        panic: bool = False,
    ) -> EndpointState:
        states = eps.states
        schedule = self._schedule(eps)

        def draw() -> EndpointState:
            chosen = states[schedule[self._next % len(schedule)]]
            self._next += 1
            return chosen

        if panic:  # the schedule, health ignored: round robin spreads by itself
            return _health_ignored(draw, now, avoid)
        for _ in range(min(len(schedule), MAX_EFFORT * 2)):
            chosen = draw()
            if chosen is not avoid and chosen.admit(now):
                return chosen
        return _fallback(eps, now, avoid, draw)


def _smooth_schedule(weights: Sequence[float], limit: int = 4096) -> list[int]:
    """nginx's smooth weighted round robin, unrolled into one cycle of at most ``limit`` picks."""
    scale = limit / sum(weights) if sum(weights) > limit else 1.0
    ints = [max(1, round(w * scale)) for w in weights]
    if len(set(ints)) == 1:
        return list(range(len(ints)))
    total = sum(ints)
    current = [0] * len(ints)
    order: list[int] = []
    for _ in range(total):
        for i, w in enumerate(ints):
            current[i] += w
        best = max(range(len(ints)), key=current.__getitem__)
        current[best] -= total
        order.append(best)
    return order


def _fallback(
    eps: EndpointSet,
    now: float,
    avoid: EndpointState | None,
    draw: Callable[[], EndpointState],
) -> EndpointState:
    """After ``MAX_EFFORT`` unlucky draws: the least loaded live endpoint, or panic mode.

    O(n), but only reached when many endpoints are dead or the set is tiny. If more than half
    are dead although the caller did not say panic (no health group, or its count lagging a
    transition), the balancer's own draw runs with health ignored, so load still spreads.
    """
    live = [s for s in eps.states if s.available(now)]
    if len(live) * 2 < len(eps.states):
        return _health_ignored(draw, now, avoid)
    candidates = [s for s in live if s is not avoid] or live
    chosen = min(candidates, key=lambda s: s.metric.load(now))
    chosen.admit(now)
    return chosen


BALANCERS = ("p2c-peak-ewma", "p2c-least-loaded", "round-robin")


def make_balancer(
    name: str, *, decay: float = 10.0, default_rtt: float = 0.030, rng: random.Random | None = None
) -> Balancer:
    """Build a balancer by its configuration name (``MESH_BALANCER``)."""
    if name == "p2c-peak-ewma":
        return P2C(metric="peak-ewma", decay=decay, default_rtt=default_rtt, rng=rng)
    if name == "p2c-least-loaded":
        return P2C(metric="least-loaded", decay=decay, rng=rng)
    if name == "round-robin":
        return RoundRobin(decay=decay)
    raise ValueError(f"balancer must be one of {', '.join(BALANCERS)}, got {name!r}")
