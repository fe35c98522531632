"""``slow-replica`` and ``failing-replica``: what the balancer does with one bad replica of three.

Why: a mesh earns its place by routing around trouble, and that shows in the tail latency and
in how much traffic the bad replica still gets. Both scenarios use meshlib's own Python
upstreams (``meshlib.upstream``, one subprocess each), because nginx cannot delay a *fraction*
of its requests; load is open loop at a fixed rate (``meshlib.demo.loadgen.run_open_loop``), with
latency measured from each request's due time so a stall is charged to everything queued
behind it (no coordinated omission). Retries do not exist yet, so every variant runs without.

* ``slow-replica``: ``gamma`` adds 50 ms to 20% of its answers. P2C over Peak-EWMA should keep
  p99 under 10 ms in every round and send gamma at most 6% of requests; P2C least-loaded,
  round robin and HAProxy ``leastconn`` (a sidecar balancer, reached through meshlib's bare
  engine) are the comparisons.
* ``failing-replica``: ``gamma`` answers 503 at once on 30% of requests. A least-outstanding
  balancer *prefers* a replica that fails fast; P2C Peak-EWMA should send it at most 15%.
"""

from __future__ import annotations

from typing import Any

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import at_most, at_most_every_round, column
from benchmarks.servers import Server, haproxy, python_upstreams
from meshlib.upstream import SpawnedUpstream, UpstreamBehaviour

__all__ = ["FAILING", "SLOW", "run_failing", "run_slow"]

SLOW = "slow-replica"
FAILING = "failing-replica"
RATE = 400.0
BAD = "gamma"
_BALANCERS = {
    "p2c-peak-ewma": "meshlib P2C Peak-EWMA (default)",
    "p2c-least-loaded": "meshlib P2C least-loaded",
    "round-robin": "meshlib round robin",
}


def _behaviours(bad: dict[str, Any]) -> list[UpstreamBehaviour]:
    return [
        UpstreamBehaviour(name="alpha", seed=11),
        UpstreamBehaviour(name="beta", seed=12),
        UpstreamBehaviour(name=BAD, seed=13, **bad),
    ]


def _spec(
    client: str, urls: list[str], balancer: str, seconds: float, accrual: bool = True
) -> dict[str, Any]:
    return {
        "mesh": {"retries": False, "accrual": accrual},
        "kind": "open-loop",
        "client": client,
        "urls": urls,
        "balancer": balancer,
        "rate": RATE,
        "duration": seconds,
        "warmup": 30,
        "warmup_seconds": 1.0,
    }


def _share(r: Result) -> float:
    return float(r["shares"].get(BAD, 0.0)) * 100


def _errors(r: Result) -> float:
    failed = sum(v for k, v in r["statuses"].items() if int(k) >= 500)
    failed += sum(r["errors"].values())
    return failed / r["sent"] * 100 if r["sent"] else float("nan")


def _notes(res: ScenarioResult, label: str, results: list[Result], slow: bool) -> None:
    for i, r in enumerate(results, 1):
        if r["errors"] or r["dropped"] or (slow and any(int(k) >= 500 for k in r["statuses"])):
            res.notes.append(
                f"{label}, round {i}: errors {r['errors']}, statuses {r['statuses']}, "
                f"dropped {r['dropped']}"
            )


def run_slow(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        SLOW,
        f"One slow replica of three, open loop {RATE:.0f} req/s",
        f"{BAD} adds 50 ms to 20% of its answers; latency from each request's due time.",
    )
    seconds = opts.seconds(10.0, 3.0)
    with python_upstreams(_behaviours({"slow_fraction": 0.2, "slow_extra": 0.05})) as ups:
        urls = [u.url for u in ups]
        variants = [Variant(b, _spec("mesh", urls, b, seconds)) for b in _BALANCERS]
        with haproxy(_as_servers(ups), "leastconn") as proxy:
            variants.append(Variant("haproxy", _spec("engine", [proxy.url], "", seconds)))
            data = interleave(SLOW, variants, opts.rounds, opts.verbose)
    labels = {**_BALANCERS, "haproxy": "HAProxy leastconn (via AsyncEngine)"}
    for key, label in labels.items():
        _notes(res, label, data[key], slow=True)
    p50 = {
        k: res.add(Row(v, "p50 ms", column(data[k], "p50_ms"), fmt="{:.2f}"))
        for k, v in labels.items()
    }
    p99 = {
        k: res.add(Row(v, "p99 ms", column(data[k], "p99_ms"), fmt="{:.2f}"))
        for k, v in labels.items()
    }
    share = {
        k: res.add(Row(v, f"% of requests to {BAD}", column(data[k], _share)))
        for k, v in labels.items()
    }
    for rows in (p50, p99, share):
        res.ratio_to(rows["round-robin"], *(r for k, r in rows.items() if k != "round-robin"))
    at_most_every_round(p99["p2c-peak-ewma"], 10.0, "ms")
    at_most(share["p2c-peak-ewma"], 6.0, "%")
    res.notes.append(
        "Upstreams are meshlib's Python servers, not nginx: nginx cannot delay a fraction of "
        "requests. Ratios are against meshlib round robin."
    )
    return res


def run_failing(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        FAILING,
        f"One replica of three failing fast, open loop {RATE:.0f} req/s, retries off",
        f"{BAD} answers 503 at once on 30% of requests. Each balancer runs twice: with failure "
        "accrual off (the balancer's own load score alone, which the target is about) and with "
        "the default accrual on (what users get: the replica is ejected).",
    )
    seconds = opts.seconds(4.0, 3.0)
    labels: dict[str, str] = {}
    variants: list[Variant] = []
    with python_upstreams(_behaviours({"fail_fraction": 0.3})) as ups:
        urls = [u.url for u in ups]
        for accrual in (False, True):
            for b, label in _BALANCERS.items():
                key = f"{b}/{'accrual' if accrual else 'alone'}"
                labels[key] = f"{label}, accrual {'on' if accrual else 'off'}"
                variants.append(Variant(key, _spec("mesh", urls, b, seconds, accrual)))
        data = interleave(FAILING, variants, opts.rounds, opts.verbose)
    for key, label in labels.items():
        _notes(res, label, data[key], slow=False)
    for metric, fn in ((f"% of requests to {BAD}", _share), ("% of requests failed", _errors)):
        for mode in ("alone", "accrual"):
            rows = {
                b: res.add(
                    Row(labels[f"{b}/{mode}"], metric, column(data[f"{b}/{mode}"], fn), "{:.1f}")
                )
                for b in _BALANCERS
            }
            res.ratio_to(rows["round-robin"], rows["p2c-peak-ewma"], rows["p2c-least-loaded"])
            if fn is _share:
                at_most(rows["p2c-peak-ewma"], 15.0, "%")
    res.notes.append(
        "Ratios are against meshlib round robin with the same accrual setting. "
        "'Failed' counts 5xx answers and transport errors seen by the caller (no retries)."
    )
    return res


def _as_servers(ups: list[SpawnedUpstream]) -> list[Server]:
    """The Python upstreams as ``Server`` records, which is what ``haproxy`` takes."""
    return [Server(f"py{i}", u.process, u.url) for i, u in enumerate(ups)]
