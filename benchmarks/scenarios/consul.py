"""``consul-change`` and ``consul-outage``: discovery through Consul under traffic.

Why: with Consul discovery the mesh must follow a change within a blink, must not hammer Consul
while nothing changes, and must keep serving from its last view when Consul is gone. Consul is
``meshlib.testing.FakeConsul`` started inside the worker process (its blocking queries, indexes
and ``down()`` / ``up()`` behave like an agent's); the three instances are meshlib's Python
upstreams, registered as one service ``svc``; the client is
``AsyncMeshClient(config=MeshConfig.from_env({"CONSUL_HTTP_ADDR": addr, ...}))``.

* ``consul-change``: open loop at 200 req/s; half a second in, one instance is deregistered.
  Reported: time from the deregistration call until ``client.mesh_state()`` no longer lists the
  endpoint, and until the last request sent to it (send time of the last request it answered)
  [≤ 100 ms]. A second worker measures the idle watcher: ``MESH_CONSUL_WAIT=5s``, nothing
  changes for 12 s, light traffic (2 req/s); ``/v1/health/service/`` reads counted by FakeConsul
  [≤ ceil(12 / 5) + 1 = 4 for the one service].
* ``consul-outage``: 200 req/s; Consul goes down (listener closed, connections dropped) for
  20 s in the middle of the run — **time-compressed from the issue's 60 s** — then comes back.
  Every call must succeed.
"""

from __future__ import annotations

import math

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import at_most, column
from benchmarks.servers import python_upstreams
from meshlib.upstream import UpstreamBehaviour

__all__ = ["CHANGE", "OUTAGE", "run_change", "run_outage"]

CHANGE = "consul-change"
OUTAGE = "consul-outage"
RATE = 200.0
WAIT_S = 5.0


def _behaviours() -> list[UpstreamBehaviour]:
    return [
        UpstreamBehaviour(name=n, seed=30 + i) for i, n in enumerate(("alpha", "beta", "gamma"))
    ]


def _failed(r: Result) -> int:
    bad = sum(v for k, v in r["statuses"].items() if int(k) != 200)
    return int(bad + sum(r["errors"].values()))


def run_change(opts: Options) -> ScenarioResult:
    idle = opts.seconds(12.0, 6.0)
    res = ScenarioResult(
        CHANGE,
        f"Consul deregistration under {RATE:.0f} req/s; idle watcher cost",
        "One of three instances is deregistered from FakeConsul while traffic runs; then, in a "
        f"separate worker, Consul stays unchanged for {idle:g} s with `MESH_CONSUL_WAIT=5s`.",
    )
    with python_upstreams(_behaviours()) as ups:
        urls = [u.url for u in ups]
        change = {"kind": "consul-change", "urls": urls, "rate": RATE, "before": 1.0, "after": 3.0}
        idle_spec = {"kind": "consul-idle", "urls": urls, "wait": "5s", "idle": idle}
        variants = [
            Variant("change", change, timeout=120.0),
            Variant("idle", idle_spec, timeout=120.0),
        ]
        data = interleave(CHANGE, variants, opts.rounds, opts.verbose)
    label = "AsyncMeshClient, Consul discovery"
    view = res.add(
        Row(
            label,
            "deregister → gone from mesh_state() ms",
            column(data["change"], "deregister_to_view_ms"),
        )
    )
    at_most(view, 100.0, "ms")
    last = res.add(
        Row(
            label,
            "deregister → last request sent to it ms",
            column(data["change"], "deregister_to_last_request_ms"),
        )
    )
    at_most(last, 100.0, "ms")
    res.add(Row(label, "caller errors during change", column(data["change"], _failed), "{:.0f}"))
    bound = math.ceil(idle / WAIT_S) + 1
    reads = res.add(
        Row(
            label,
            f"/v1/health/service reads in {idle:g} s idle",
            column(data["idle"], "health_requests"),
            "{:.0f}",
        )
    )
    reads.target = f"≤ {bound} (1 per {WAIT_S:g} s wait + 1 initial) in every round"
    reads.passed = bool(reads.rounds) and max(reads.rounds) <= bound
    for i, r in enumerate(data["idle"], 1):
        res.notes.append(f"idle round {i}: FakeConsul saw {r['paths']} in {r['elapsed_s']:.1f} s")
    for i, r in enumerate(data["change"], 1):
        res.notes.append(
            f"change round {i}: calls {r['sent']}, served by {r['served_by']}, statuses "
            f"{r['statuses']}, errors {r['errors']}"
        )
    res.notes.append(
        "'last request sent to it' is the send time of the last request the removed instance "
        "answered (from its X-Upstream header), minus the time the deregistration call began; 0 "
        "when no request sent after the call reached it."
    )
    return res


def run_outage(opts: Options) -> ScenarioResult:
    outage = opts.seconds(20.0, 5.0)
    res = ScenarioResult(
        OUTAGE,
        f"Consul unreachable for {outage:g} s under {RATE:.0f} calls/s",
        f"FakeConsul `down()` (listener closed, connections dropped) for {outage:g} s, 1 s into an "
        f"open loop of {outage + 2:g} s, then `up()`; `MESH_CONSUL_WAIT=2s`. **Time-compressed: "
        f"{outage:g} s instead of the issue's 60 s.**",
    )
    with python_upstreams(_behaviours()) as ups:
        spec = {
            "kind": "consul-outage",
            "urls": [u.url for u in ups],
            "rate": RATE,
            "outage": outage,
        }
        data = interleave(
            OUTAGE, [Variant("outage", spec, timeout=180.0)], opts.rounds, opts.verbose
        )
    label = "AsyncMeshClient, Consul discovery"
    ok = [
        (r["sent"] - _failed(r)) / r["sent"] * 100 if r["sent"] else float("nan")
        for r in data["outage"]
    ]
    res.add(Row(label, "calls", column(data["outage"], "sent"), "{:.0f}"))
    row = res.add(Row(label, "% calls succeeded", ok, "{:.3f}"))
    row.target = "100 % in every round"
    row.passed = bool(ok) and min(ok) >= 100.0
    res.add(Row(label, "p99 ms (context)", column(data["outage"], "p99_ms"), "{:.2f}"))
    for i, r in enumerate(data["outage"], 1):
        res.notes.append(
            f"round {i}: statuses {r['statuses']}, errors {r['errors']}, dropped {r['dropped']}"
        )
    return res
