"""``random-stalls`` and ``overload``: hedged requests and the adaptive concurrency limit.

Why: P2C Peak-EWMA avoids a replica that is slow *consistently*; a replica that stalls *at
random* still sets the caller's p99, and only a backup request to another replica removes it.
And a client that keeps sending what it is asked to send makes a saturated service queue until
every call misses its deadline; a limit that follows latency keeps the service at its capacity
and refuses the excess at once. Both use meshlib's Python upstreams (subprocesses, so stalls and
capacity can be injected) and an open loop through ``AsyncMeshClient``, each variant in its own
worker process, interleaved round by round.

* ``random-stalls``: 3 replicas, each request has a 2% chance of +100 ms
  (``slow_fraction=0.02, slow_extra=0.1``); 200 req/s for 10 s per round (2,000 calls, so
  the p99 is the 20th slowest; at 400 req/s the four Python processes of the measurement
  saturate two shared cores and the p99 measures the machine's scheduling instead).
  Variants: no hedging (defaults), and ``MESH_HEDGE=svc=on`` (the p95 of recent latencies,
  floor 5 ms, 5% budget).
  Targets: hedged p99 ≤ 0.25 x the unhedged p99, with ≤ 5% extra upstream requests. Two more
  rounds than ``--rounds`` (7 by default), see ``EXTRA_ROUNDS``.
* ``overload``: 3 replicas of 100 req/s each (``capacity=100``: a FIFO queue, 10 ms of server
  time per request), 300 req/s in all, offered 600 req/s for 8 s per round, every call with a
  500 ms deadline (``MESH_TIMEOUT=500ms``). Variants: no limit, and
  ``MESH_ADAPTIVE_CONCURRENCY=svc=on`` (Vegas). Goodput is successful calls per second that
  finished within the deadline. Target: ≥ 90% of capacity (270/s) with the limit.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import at_most, column
from benchmarks.servers import python_upstreams
from meshlib.upstream import UpstreamBehaviour

__all__ = ["OVERLOAD", "STALLS", "run_overload", "run_stalls"]

STALLS = "random-stalls"
OVERLOAD = "overload"
CAPACITY = 300.0
EXTRA_ROUNDS = 2
"""random-stalls runs two rounds more than asked: a p99 of 2,000 calls is the 20th slowest,
so one moment in which the host deschedules the client decides a round, and the median needs
more rounds to see past such moments."""
DEADLINE = 0.5


def _calls(r: Result) -> int:
    return int(r["sent"])


def _upstream(r: Result) -> int:
    return int(sum(r["upstream"].values()))


def _extra_pct(r: Result) -> float:
    return (_upstream(r) - _calls(r)) / _calls(r) * 100 if _calls(r) else float("nan")


def _failed(r: Result) -> int:
    bad = sum(v for k, v in r["statuses"].items() if int(k) != 200)
    return int(bad + sum(r["errors"].values()))


def _spec(urls: list[str], rate: float, seconds: float, **kw: Any) -> dict[str, Any]:
    return {"kind": "tail-open-loop", "urls": urls, "rate": rate, "duration": seconds, **kw}


def _notes(res: ScenarioResult, name: str, results: list[Result]) -> None:
    for i, r in enumerate(results, 1):
        res.notes.append(
            f"{name}, round {i}: calls {r['sent']}, statuses {r['statuses']}, errors "
            f"{r['errors']}, dropped {r['dropped']}, upstream {r['upstream']}, hedges sent "
            f"{r['hedges_sent']} and refused {r['hedges_refused']} (warm-up included; delay "
            f"quantile {r['hedge_quantile_ms']} ms), limit {r['limit']}"
        )


def run_stalls(opts: Options) -> ScenarioResult:
    rate, seconds = 200.0, opts.seconds(10.0, 3.0)
    res = ScenarioResult(
        STALLS,
        f"Random stalls: 3 replicas, 2% of requests +100 ms, open loop {rate:.0f} req/s",
        "Every replica delays each request by 100 ms with probability 2%, independently. "
        f"{seconds:g} s measured per round after 30 sequential calls and 1 s at the same rate. "
        "Hedged: `MESH_HEDGE=svc=on` (a backup to another replica once the first attempt is "
        "older than the p95 of recent latencies, floor 5 ms, at most 5% extra requests).",
    )
    behaviours = [
        UpstreamBehaviour(name=n, seed=40 + i, slow_fraction=0.02, slow_extra=0.1)
        for i, n in enumerate(("alpha", "beta", "gamma"))
    ]
    warm = {"warmup": 30, "warmup_seconds": 1.0}
    with python_upstreams(behaviours) as ups:
        urls = [u.url for u in ups]
        variants = [
            Variant("plain", _spec(urls, rate, seconds, **warm)),
            Variant("hedged", _spec(urls, rate, seconds, hedge="on", **warm)),
        ]
        data = interleave(STALLS, variants, opts.rounds + EXTRA_ROUNDS, opts.verbose)
    plain, hedged = data["plain"], data["hedged"]
    base_label, label = "no hedging (defaults)", "hedged (MESH_HEDGE=svc=on)"
    base = res.add(Row(base_label, "p99 ms", column(plain, "p99_ms"), "{:.2f}"))
    p99 = res.add(Row(label, "p99 ms", column(hedged, "p99_ms"), "{:.2f}"))
    res.ratio_to(base, p99)
    p99.target = "≤ 0.25x unhedged"
    p99.passed = p99.ratio is not None and p99.ratio == p99.ratio and p99.ratio <= 0.25
    res.add(Row(base_label, "p50 ms (context)", column(plain, "p50_ms"), "{:.2f}"))
    res.add(Row(label, "p50 ms (context)", column(hedged, "p50_ms"), "{:.2f}"))
    res.add(Row(base_label, "p99.9 ms (context)", column(plain, "p999_ms"), "{:.2f}"))
    res.add(Row(label, "p99.9 ms (context)", column(hedged, "p999_ms"), "{:.2f}"))
    res.add(Row(base_label, "extra upstream requests, %", column(plain, _extra_pct), "{:.2f}"))
    at_most(
        res.add(Row(label, "extra upstream requests, %", column(hedged, _extra_pct), "{:.2f}")),
        5.0,
        "%",
    )
    res.add(Row(label, "caller errors", column(hedged, _failed), "{:.0f}"))
    _notes(res, "plain", plain)
    _notes(res, "hedged", hedged)
    return res


def run_overload(opts: Options) -> ScenarioResult:
    rate, seconds = 2 * CAPACITY, opts.seconds(8.0, 3.0)
    res = ScenarioResult(
        OVERLOAD,
        f"Overload: capacity {CAPACITY:.0f} req/s offered {rate:.0f} req/s, "
        f"{DEADLINE * 1000:.0f} ms deadline",
        f"3 replicas of {CAPACITY / 3:.0f} req/s each (a FIFO queue, "
        f"{3000 / CAPACITY:.0f} ms of server time per request; a replica keeps working on "
        "requests whose caller has given up, as a saturated service does), "
        f"`MESH_TIMEOUT={DEADLINE * 1000:.0f}ms`. {seconds:g} s measured per round after 30 "
        f"sequential calls and 1 s at {CAPACITY / 2:.0f} req/s; each worker starts the replicas "
        "with empty queues. Goodput: successful calls per second that finished within the "
        "deadline. With the limit: `MESH_ADAPTIVE_CONCURRENCY=svc=on` (Vegas); calls above it "
        "fail at once with `RateLimited`.",
    )
    behaviours = [
        UpstreamBehaviour(name=n, seed=50 + i, capacity=CAPACITY / 3)
        for i, n in enumerate(("alpha", "beta", "gamma"))
    ]
    warm = {"warmup": 30, "warmup_seconds": 1.0, "warmup_rate": CAPACITY / 2}
    with python_upstreams(behaviours) as ups:
        urls = [u.url for u in ups]
        variants = [
            Variant("plain", _spec(urls, rate, seconds, deadline=DEADLINE, **warm)),
            Variant(
                "limited", _spec(urls, rate, seconds, deadline=DEADLINE, adaptive="on", **warm)
            ),
        ]
        data = interleave(OVERLOAD, variants, opts.rounds, opts.verbose)
    plain, limited = data["plain"], data["limited"]
    base_label, label = "no limit (defaults)", "adaptive limit (Vegas)"
    base = res.add(Row(base_label, "goodput calls/s", column(plain, "goodput"), "{:.1f}"))
    good = res.add(Row(label, "goodput calls/s", column(limited, "goodput"), "{:.1f}"))
    res.ratio_to(base, good)
    pct = [g / CAPACITY * 100 for g in good.rounds]
    res.add(Row(base_label, "goodput, % of capacity", [g / CAPACITY * 100 for g in base.rounds]))
    share = res.add(Row(label, "goodput, % of capacity", pct))
    share.target = "≥ 90 %"
    share.passed = share.median == share.median and share.median >= 90.0
    res.add(
        Row(
            label,
            "refused at once (RateLimited), calls/s",
            column(limited, lambda r: r["refused"] / r["duration_s"]),
        )
    )
    res.add(Row(base_label, "p50 ms of all calls (context)", column(plain, "p50_ms"), "{:.1f}"))
    res.add(Row(label, "p50 ms of all calls (context)", column(limited, "p50_ms"), "{:.1f}"))
    res.add(
        Row(label, "final limit (context)", column(limited, lambda r: r["limit"] or 0), "{:.0f}")
    )
    _notes(res, "plain", plain)
    _notes(res, "limited", limited)
    return res
