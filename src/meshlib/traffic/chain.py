"""A compiled discovery chain as meshlib follows it: routes, one weighted split, resolver targets.

``parse_chain`` reads Consul's ``/v1/discovery-chain/<service>`` JSON (or what
``compiler.compile_chain`` makes from a static file) into frozen objects, once per change;
``Chain.choose`` is then the whole per-request cost: the first route whose match holds (in
order, as Envoy tries them), then, if it leads to a splitter, one uniform draw against the
cumulative weights, per request and never per connection. The result names a ``ChainTarget``:
the service, its subset filter, its datacenter, the failover targets to try when it has no
healthy endpoint, and the route's timeout and retry overrides.

Everything meshlib cannot honour is collected as a *problem* (the node and the field, and
what meshlib does instead) rather than raised, so one unsupported feature never takes the
rest of the chain down: a route that asks for something meshlib cannot do (a path rewrite,
header changes, Envoy retry conditions, hash-based balancing) is dropped, so its requests
fall through to the next route and, at worst, to the default route; a split's header changes
are not applied but the split is; a subset filter over fields meshlib does not carry makes
that target match nothing, so failover applies to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from meshlib.endpoint import Endpoint
from meshlib.traffic.bexpr import FilterError, Predicate, compile_filter
from meshlib.traffic.durations import parse_go_duration
from meshlib.traffic.match import Check, RouteMatch, parse_match
from meshlib.traffic.schema import SUBSET_SCHEMA, endpoint_view

__all__ = ["Chain", "ChainTarget", "Choice", "Route", "Split", "parse_chain"]

_LB_POLICIES = {"": "default", "least_request": "default", "round_robin": "round-robin"}
_CONSUL_CONNECT_TIMEOUT = 5.0
_RETRY_ON = frozenset({"connect-failure", "refused-stream", "reset", "retriable-status-codes"})


@dataclass(frozen=True, slots=True, eq=False)
class ChainTarget:
    """One resolver target: which instances of which service, where, and what to fail over to."""

    id: str
    service: str
    subset: str | None
    dc: str | None
    """None for the chain's own datacenter."""
    filter: str = ""
    predicate: Predicate | None = None
    connect_timeout: float | None = None
    balancer: str = "default"
    failover: tuple[ChainTarget, ...] = ()
    refused: bool = False
    """The subset filter uses selectors meshlib cannot evaluate: the target matches nothing."""

    def admits(self, endpoint: Endpoint) -> bool:
        if self.refused:
            return False
        return self.predicate is None or self.predicate(endpoint_view(endpoint))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service, "subset": self.subset}
        if self.dc is not None:
            out["dc"] = self.dc
        if self.filter:
            out["filter"] = self.filter
        if self.connect_timeout is not None:
            out["connect_timeout_s"] = self.connect_timeout
        if self.failover:
            out["failover"] = [t.id for t in self.failover]
        return out


@dataclass(frozen=True, slots=True, eq=False)
class Split:
    """A weighted choice between targets (Consul flattens nested splitters into one)."""

    weights: tuple[float, ...]
    targets: tuple[ChainTarget, ...]
    cumulative: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        total, cum = 0.0, []
        for w in self.weights:
            total += w
            cum.append(total)
        object.__setattr__(self, "cumulative", tuple(cum))

    def pick(self, u: float) -> ChainTarget:
        """The target for a uniform draw ``u`` in [0, 1)."""
        cum = self.cumulative
        i = bisect.bisect_right(cum, u * cum[-1])
        targets = self.targets
        return targets[i] if i < len(targets) else targets[-1]  # u * total rounded up to total


Step = ChainTarget | Split


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A router's route: its match (None: everything), where it leads, and its overrides."""

    index: int
    match: RouteMatch | None
    step: Step
    timeout: float | None = None
    retries: int | None = None
    retry_statuses: frozenset[int] = frozenset()
    test: Check | None = field(init=False)
    """The match as one closure (None: everything matches)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", self.match.compiled() if self.match else None)


class Choice(NamedTuple):
    """Where one request goes: a target, and the route that sent it there (if any). A tuple:
    one is made per request, and a tuple is the cheapest immutable record to make."""

    target: ChainTarget
    route: Route | None


@dataclass(frozen=True, slots=True, eq=False)
class Chain:
    """One service's chain; ``choose`` runs per request, everything else once per change."""

    service: str
    routes: tuple[Route, ...]
    start: Step | None
    """Where requests go when there is no router (None when there is one)."""
    targets: Mapping[str, ChainTarget]
    problems: tuple[str, ...] = ()
    uses_path: bool = field(init=False)
    """Some route tests the path (else the caller need not extract it)."""
    uses_headers: bool = field(init=False)
    header_names: frozenset[bytes] = field(init=False)
    """The (lower-cased) header names the routes test."""
    uses_query: bool = field(init=False)
    uses_url: bool = field(init=False)
    """The path or the query (either: the URL is read once for both)."""
    splits: bool = field(init=False)
    """Some request may need the split's draw."""

    def __post_init__(self) -> None:
        matches = [r.match for r in self.routes if r.match is not None]
        path = any(m.path_exact or m.path_prefix or m.path_regex for m in matches)
        object.__setattr__(self, "uses_path", path)
        object.__setattr__(self, "uses_headers", any(m.headers for m in matches))
        names = frozenset(h.name.encode("latin-1") for m in matches for h in m.headers)
        object.__setattr__(self, "header_names", names)
        object.__setattr__(self, "uses_query", any(m.query for m in matches))
        object.__setattr__(self, "uses_url", self.uses_path or self.uses_query)
        steps = [r.step for r in self.routes] + ([self.start] if self.start else [])
        object.__setattr__(self, "splits", any(isinstance(s, Split) for s in steps))

    def choose(self, method: str, path: str, headers: Any, query: Any, u: float) -> Choice:
        """``headers`` (by lower-cased name) and ``query`` are mappings (``match.Values``);
        ``u`` is a uniform draw in [0, 1) for the split."""
        route: Route | None = None
        step = self.start
        if step is None:
            for r in self.routes:
                test = r.test
                if test is None or test(method, path, headers, query):
                    route, step = r, r.step
                    break
            else:  # no route matched: the service's own default (Consul always adds one)
                route = self.routes[-1]
                step = route.step
        target = step if isinstance(step, ChainTarget) else step.pick(u)
        return Choice(target, route)

    def subset_target(self, service: str, subset: str) -> ChainTarget | None:
        """The chain's target for ``service`` narrowed to ``subset`` (for the override)."""
        for t in self.targets.values():
            if t.service == service and t.subset == subset and t.dc is None:
                return t
        return None

    def describe(self) -> dict[str, Any]:
        """Routes, split and targets as plain JSON, for ``mesh_state()`` and the CLI."""
        out: dict[str, Any] = {
            "routes": [
                {
                    "match": r.match.describe() if r.match is not None else "*",
                    "to": _describe_step(r.step),
                    **({"timeout_s": r.timeout} if r.timeout is not None else {}),
                    **({"retries": r.retries} if r.retries is not None else {}),
                }
                for r in self.routes
            ],
            "targets": {tid: t.describe() for tid, t in self.targets.items()},
            "problems": list(self.problems),
        }
        if self.start is not None:
            out["to"] = _describe_step(self.start)
        return out


def _describe_step(step: Step) -> Any:
    if isinstance(step, ChainTarget):
        return step.id
    return [{"target": t.id, "weight": w} for t, w in zip(step.targets, step.weights, strict=True)]


def _seconds(value: Any, where: str) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        seconds = parse_go_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return seconds if seconds > 0 else None


class _Reader:
    def __init__(self, chain: Mapping[str, Any]) -> None:
        self.chain = chain
        self.local_dc = str(chain.get("Datacenter") or "")
        self.raw_nodes: Mapping[str, Any] = chain.get("Nodes") or {}
        self.raw_targets: Mapping[str, Any] = chain.get("Targets") or {}
        self.problems: list[str] = []
        self.targets: dict[str, ChainTarget] = {}
        self.balancers: dict[str, str] = {}
        self.timeouts: dict[str, float | None] = {}

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def target(self, tid: str, depth: int = 0) -> ChainTarget:
        found = self.targets.get(tid)
        if found is not None:
            return found
        raw = self.raw_targets.get(tid)
        if not isinstance(raw, Mapping):
            raise ValueError(f"the chain names target {tid!r} but does not define it")
        if raw.get("Peer"):
            self.problem(f"target {tid}: cluster peering is not supported; it matches nothing")
        subset = raw.get("Subset") or {}
        text = str(subset.get("Filter") or "")
        predicate, refused = None, bool(raw.get("Peer"))
        if text:
            try:
                predicate = compile_filter(text, SUBSET_SCHEMA)
            except FilterError as exc:
                refused = True
                self.problem(
                    f"target {tid}: subset filter {text!r} cannot be evaluated by meshlib "
                    f"({exc}); only Service.ID, Service.Service, Service.Tags, Service.Meta, "
                    "Service.Address, Service.Port and Node.Meta are known: the subset "
                    "matches nothing"
                )
        dc = str(raw.get("Datacenter") or self.local_dc)
        resolver_node = self.raw_nodes.get("resolver:" + tid) or {}
        failover_ids = ((resolver_node.get("Resolver") or {}).get("Failover") or {}).get(
            "Targets"
        ) or []
        failover = tuple(self.target(f, depth + 1) for f in failover_ids if f != tid and depth < 4)
        timeout = self.timeouts.get(tid)
        if timeout is None:
            timeout = _seconds(raw.get("ConnectTimeout"), f"target {tid} ConnectTimeout")
        if timeout == _CONSUL_CONNECT_TIMEOUT:
            # Consul fills in its default everywhere; httpx's default connect timeout is the
            # same 5 s, so only a resolver's own setting needs applying on each attempt.
            timeout = None
        t = ChainTarget(
            id=tid,
            service=str(raw.get("Service") or ""),
            subset=str(raw.get("ServiceSubset") or "") or None,
            dc=None if dc == self.local_dc else dc,
            filter=text,
            predicate=predicate,
            connect_timeout=timeout,
            balancer=self.balancers.get(tid, "default"),
            failover=failover,
            refused=refused,
        )
        self.targets[tid] = t
        return t

    def resolver(self, node_id: str, node: Mapping[str, Any]) -> ChainTarget:
        body = node.get("Resolver") or {}
        tid = str(body.get("Target") or "")
        lb = node.get("LoadBalancer") or {}
        policy = str(lb.get("Policy") or "")
        if policy not in _LB_POLICIES or lb.get("HashPolicies"):
            self.problem(
                f"{node_id}: load balancer policy {policy!r} is not supported; "
                "meshlib's configured balancer is used"
            )
        else:
            self.balancers[tid] = _LB_POLICIES[policy]
        if (body.get("Failover") or {}).get("Policy"):
            self.problem(f"{node_id}: a failover Policy is not supported; targets tried in order")
        self.timeouts[tid] = _seconds(body.get("ConnectTimeout"), f"{node_id} ConnectTimeout")
        return self.target(tid)

    def step(self, node_id: str) -> Step:
        node = self.raw_nodes.get(node_id)
        if not isinstance(node, Mapping):
            raise ValueError(f"the chain names node {node_id!r} but does not define it")
        kind = node.get("Type")
        if kind == "resolver":
            return self.resolver(node_id, node)
        if kind == "splitter":
            weights, targets = [], []
            for split in node.get("Splits") or []:
                definition = split.get("Definition") or {}
                if definition.get("RequestHeaders") or definition.get("ResponseHeaders"):
                    self.problem(
                        f"{node_id}: header changes on splits are not supported; not applied"
                    )
                nxt = self.step(str(split.get("NextNode")))
                for t, w in _flat(nxt, float(split.get("Weight") or 0.0)):
                    weights.append(w)
                    targets.append(t)
            if not weights or sum(weights) <= 0:
                raise ValueError(f"{node_id}: a splitter without weighted splits")
            return Split(tuple(weights), tuple(targets))
        raise ValueError(f"node {node_id!r} has unknown type {kind!r}")

    def routes(self, node: Mapping[str, Any]) -> tuple[Route, ...]:
        out = []
        raw_routes = node.get("Routes") or []
        for i, raw in enumerate(raw_routes):
            definition = raw.get("Definition") or {}
            dest = definition.get("Destination") or {}
            why = _unsupported_destination(dest)
            if why and i < len(raw_routes) - 1:
                self.problem(f"route {i}: {why}; the route is ignored")
                continue
            out.append(
                Route(
                    index=i,
                    match=parse_match(definition.get("Match")),
                    step=self.step(str(raw.get("NextNode"))),
                    timeout=_seconds(dest.get("RequestTimeout"), f"route {i} RequestTimeout"),
                    retries=int(dest["NumRetries"]) if dest.get("NumRetries") else None,
                    retry_statuses=frozenset(int(c) for c in dest.get("RetryOnStatusCodes") or ()),
                )
            )
        if not out:
            raise ValueError("a router without routes")
        return tuple(out)

    def read(self) -> Chain:
        start_id = str(self.chain.get("StartNode") or "")
        start = self.raw_nodes.get(start_id)
        if not isinstance(start, Mapping):
            raise ValueError(f"StartNode {start_id!r} is not among the chain's Nodes")
        if start.get("Type") == "router":
            routes, first = self.routes(start), None
        else:
            routes, first = (), self.step(start_id)
        return Chain(
            service=str(self.chain.get("ServiceName") or ""),
            routes=routes,
            start=first,
            targets=dict(self.targets),
            problems=tuple(self.problems),
        )


def _flat(step: Step, weight: float) -> list[tuple[ChainTarget, float]]:
    if isinstance(step, ChainTarget):
        return [(step, weight)]
    total = step.cumulative[-1]
    return [(t, weight * w / total) for t, w in zip(step.targets, step.weights, strict=True)]


def _unsupported_destination(dest: Mapping[str, Any]) -> str:
    if dest.get("PrefixRewrite"):
        return "PrefixRewrite is not supported"
    if dest.get("RequestHeaders") or dest.get("ResponseHeaders"):
        return "RequestHeaders/ResponseHeaders are not supported"
    other = set(dest.get("RetryOn") or ()) - _RETRY_ON
    if other:
        return f"RetryOn {sorted(other)} is not supported"
    return ""


def parse_chain(data: Any) -> Chain | None:
    """The chain in a ``/v1/discovery-chain`` answer (``{"Chain": {...}}`` or the inner object);
    None for Consul's default chain (no entries apply: the service is used as it is).

    Raises ``ValueError`` naming what is malformed; unsupported features become problems."""
    if isinstance(data, Mapping) and "Chain" in data:
        data = data["Chain"]
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a discovery chain object, got {type(data).__name__}")
    if data.get("Default") is True:
        return None
    try:
        return _Reader(data).read()
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"malformed discovery chain: {exc}") from None
