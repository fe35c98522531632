"""A JSON-serialisable snapshot of what the mesh knows: ``client.mesh_state()``.

Operators need to see what the balancer sees: per service, where its endpoints came from and
how stale they are, the retry budget's balance and counters, whether panic mode is on, the
deadlines that bound each call and how many calls ran out of time; per
endpoint, its Peak-EWMA latency, requests in flight, failure score, success rate, breaker state
and the time to its next probe. The demo, the CLI and the admin page all read this one shape,
so it is built here once. Reading it takes no locks on the request path and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlib.accrual.health import EndpointHealth
from meshlib.discovery.base import Target
from meshlib.load.metric import PeakEwma
from meshlib.retry.budget import RetryBudget
from meshlib.routing.router import Router

__all__ = ["snapshot"]


def _endpoint(st: Any, now: float) -> dict[str, Any]:
    metric = st.metric
    out: dict[str, Any] = {
        "address": st.address,
        "weight": st.endpoint.weight,
        "tags": list(st.endpoint.tags),
        "meta": dict(st.endpoint.meta),
        "in_flight": metric.pending,
        "load": round(min(metric.load(now), 1e12), 6),
        "failure_score": round(metric.failure_rate(now), 4),
    }
    if isinstance(metric, PeakEwma):
        out["ewma_ms"] = round(metric.cost(now) * 1000.0, 3)
    stats = st.stats
    out["requests"] = stats.requests
    out["failures"] = stats.failures
    for q in (50, 99):
        value = stats.percentile(now, q)
        out[f"p{q}_ms"] = None if value is None else round(value * 1000.0, 3)
    health = st.health
    if isinstance(health, EndpointHealth):
        rate, total = health.success_rate()
        out["state"] = health.state
        # Alive for accrual but failing in a row: the balancer already avoids it (failures
        # raise its load score), so operators see it before it is ejected.
        out["consecutive_failures"] = health.consecutive_failures
        if health.state == "alive" and health.consecutive_failures:
            out["state"] = "failing"
        out["next_probe_in_s"] = round(health.next_probe_in(now), 3)
        out["success_rate"] = round(rate, 4)
        out["requests_in_window"] = total
    else:
        out["state"] = "alive"
    return out


def snapshot(
    router: Router,
    budgets: Mapping[Target, RetryBudget],
    limits: Mapping[Target, Any],
    deadlines: Mapping[str, float | None] | None = None,
    exceeded: Mapping[Target, int] | None = None,
    hedges: Mapping[Target, Any] | None = None,
) -> dict[str, Any]:
    """Everything about every service used so far, as plain JSON types. ``deadlines`` are the
    configured total and per-try bounds; ``exceeded`` counts calls that ran out of time."""
    now = router.clock.now()
    watches = getattr(router.discovery, "watch_state", None)
    watch = watches() if watches is not None else {}
    services: dict[str, Any] = {}
    for known in router.services():
        try:
            # Refresh from discovery first: the router itself updates lazily, on requests.
            svc = router.service(known.target) or known
        except Exception:  # a staleness bound may refuse it; show what we had
            svc = known
        res = svc.resolution
        endpoints = [_endpoint(st, now) for st in svc.eps.states]
        dead = sum(1 for e in endpoints if e["state"] in ("dead", "probing"))
        entry: dict[str, Any] = {
            "source": res.source,
            "stale": res.stale,
            "staleness_s": round(max(0.0, now - res.updated_at), 3) if res.stale else 0.0,
            "balancer": router.balancer.name,
            "endpoints": endpoints,
            "dead": dead,
            "panic": bool(endpoints) and dead * 2 > len(endpoints),
        }
        if str(svc.target) in watch:
            # Consul: the watch's index, consecutive errors and the last one (no secrets).
            entry["discovery"] = watch[str(svc.target)]
        if deadlines is not None:
            entry["deadlines"] = {
                **deadlines,
                "exceeded": (exceeded or {}).get(svc.target, 0),
            }
        if router.zones is not None:
            entry["zones"] = router.zones.describe(svc)
        budget = budgets.get(svc.target)
        if budget is not None:
            entry["budget"] = budget.snapshot()
        lim = limits.get(svc.target)
        if lim is not None:
            entry["limits"] = {
                "rate": lim.rate.rate if lim.rate else None,
                "rate_refused": lim.rate.refused if lim.rate else 0,
                "max_in_flight": lim.concurrency.limit if lim.concurrency else None,
                "in_flight": lim.concurrency.in_flight if lim.concurrency else None,
                "concurrency_refused": lim.concurrency.refused if lim.concurrency else 0,
            }
            if lim.adaptive is not None:
                entry["limits"]["adaptive"] = lim.adaptive.snapshot()
        hedge = hedges.get(svc.target) if hedges else None
        if hedge is not None:
            entry["hedge"] = hedge.snapshot()
        services[str(svc.target)] = entry
    return {"services": services, "traffic": _traffic(router)}


def _traffic(router: Router) -> dict[str, Any]:
    """Per service with a discovery chain: its routes, split, targets and problems, and the
    chain watch (Consul); under ``targets_in_use``, each chain target's endpoints."""
    states = getattr(router.discovery, "traffic_state", None)
    watch = states() if states is not None else {}
    out: dict[str, Any] = {}
    for svc in router.services():
        t = svc.target
        if t.subset is not None or str(t) in out:
            continue
        try:
            chain = router.chain(t)
        except Exception:  # state must render whatever discovery thinks
            continue
        if chain is None:
            continue
        entry: dict[str, Any] = {"chain": chain.describe()}
        if t.service in watch:
            entry["watch"] = watch[t.service]
        out[str(t)] = entry
    if out:
        out["targets_in_use"] = router.chains.snapshot()
    return out
