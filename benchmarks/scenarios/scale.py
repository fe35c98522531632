"""``scale``: memory per endpoint and pick time as the mesh grows.

Why: an in-process mesh holds routing state for every service a process talks to, in every
process. 1,000 services of 10 endpoints is a large but real fleet; the state must stay small
(≤ 2 KB per endpoint) and picking an endpoint must not get slower as a service grows (P2C
samples two endpoints whatever the set's size), so a 1,000-endpoint pick should cost about
what a 3-endpoint pick does.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Variant, interleave, run_worker
from benchmarks.scenarios.common import at_most, column, ratio_target

__all__ = ["NAME", "run"]

NAME = "scale"
SIZES = (3, 10, 100, 1000)
BALANCER = "p2c-peak-ewma"


def _memory_spec() -> dict[str, Any]:
    return {"kind": "scale-memory", "services": 1000, "endpoints": 10, "balancer": BALANCER}


def _pick_spec(size: int, opts: Options) -> dict[str, Any]:
    return {
        "kind": "scale-pick",
        "endpoints": size,
        "balancer": BALANCER,
        "picks": opts.scale(300_000, 50_000),
        "warmup": 10_000,
        "max_seconds": opts.seconds(10.0, 3.0),
    }


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Scale: memory per endpoint and pick time",
        "1,000 services x 10 endpoints in StaticDiscovery, every service resolved once; "
        f"router.pick with {BALANCER}.",
    )
    # Memory is deterministic for a given code version (and tracing is slow): measured once.
    mem = [run_worker(_memory_spec(), timeout=300.0)]
    variants = [Variant(f"pick{n}", _pick_spec(n, opts)) for n in SIZES]
    data = interleave(NAME, variants, opts.rounds, opts.verbose)
    at_most(
        res.add(
            Row("discovery + router state", "bytes/endpoint", column(mem, "bytes_per_endpoint"))
        ),
        2048,
        "bytes",
    )
    res.add(
        Row(
            "  of which StaticDiscovery",
            "bytes/endpoint",
            column(mem, lambda r: r["discovery_bytes"] / r["endpoints"]),
        )
    )
    res.add(
        Row(
            "  of which router (states, metrics, sets)",
            "bytes/endpoint",
            column(mem, lambda r: r["router_bytes"] / r["endpoints"]),
        )
    )
    if mem:
        res.notes.append(
            "Memory is measured once (it does not vary between runs of the same code). "
            "Largest allocation sites still alive: " + "; ".join(mem[0]["top_sites"])
        )
    picks = {
        n: res.add(
            Row(f"{n} endpoints", "µs per pick", column(data[f"pick{n}"], "us_per_pick"), "{:.3f}")
        )
        for n in SIZES
    }
    res.ratio_to(picks[3], *(picks[n] for n in SIZES if n != 3))
    ratio_target(picks[1000], 1.5)
    return res
