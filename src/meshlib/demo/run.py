"""The main job: ``python -m meshlib demo`` shows the mesh at work with nothing to set up.

It starts three small upstream services on 127.0.0.1 as separate processes (``alpha``, ``beta``
and ``gamma``; gamma is "sometimes slow": 20% of its answers take 50 ms more), declares them as
the service ``demo`` in static discovery, and drives the same open-loop traffic through an
``AsyncMeshClient`` twice: once with the default P2C Peak-EWMA balancer and once with round
robin, so the difference a latency-aware balancer makes is visible in one screen. A third act
(``demo_resilience``) makes beta fail mid-run and shows the ejection, the probe and the recovery
while retries keep callers from seeing errors. Every upstream is stopped by its own pid at the
end, and the command exits 0 by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

import httpx

from meshlib.client import AsyncMeshClient
from meshlib.config import MeshConfig
from meshlib.demo.consul import run_consul_act
from meshlib.demo.loadgen import LoadResult, run_open_loop
from meshlib.demo.resilience import run_resilience_act
from meshlib.demo.view import View, make_view
from meshlib.discovery.static import StaticDiscovery
from meshlib.otel.sdk import memory_exporter
from meshlib.telemetry import configure, format_trace_tree
from meshlib.upstream import SpawnedUpstream, UpstreamBehaviour, spawn_upstream

__all__ = ["DemoOptions", "add_arguments", "run_demo"]

_NAMES = ("alpha", "beta", "gamma")


class DemoOptions(argparse.Namespace):
    duration: float = 6.0
    rate: float = 200.0
    seed: int = 7
    consul: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (all optional; defaults finish in about 25 s)."""
    parser.add_argument(
        "--duration", type=float, default=6.0, help="seconds of traffic per balancer (default 6)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="requests per second, open loop (default 200)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed for the upstreams' randomness")
    parser.add_argument(
        "--consul",
        action="store_true",
        help="discover the upstreams through an embedded FakeConsul (registry changes, outage)",
    )


def _behaviours(seed: int, *, slow_gamma: bool = True) -> list[UpstreamBehaviour]:
    slow = {"slow_fraction": 0.2, "slow_extra": 0.050} if slow_gamma else {}
    return [
        UpstreamBehaviour(name="alpha", seed=seed),
        UpstreamBehaviour(name="beta", seed=seed + 1),
        UpstreamBehaviour(name="gamma", seed=seed + 2, **slow),  # type: ignore[arg-type]
    ]


def _rows(result: LoadResult) -> list[list[str]]:
    rows = []
    for name in _NAMES:
        label = name + (" (slow)" if name == "gamma" else "")
        rows.append([label, str(result.served_by[name]), f"{result.share(name):.1%}", ""])
    rows.append(
        [
            "all",
            str(result.sent),
            "",
            f"p50 {result.p(50) * 1000:.2f} ms  p99 {result.p(99) * 1000:.2f} ms  "
            f"errors {result.error_count}",
        ]
    )
    return rows


async def _drive(
    balancer: str, title: str, upstreams: Sequence[SpawnedUpstream], opts: DemoOptions, view: View
) -> LoadResult:
    discovery = StaticDiscovery({"demo": [f"127.0.0.1:{u.port}" for u in upstreams]})
    config = MeshConfig(balancer=balancer)
    result = LoadResult()
    table = view.table(title, ["endpoint", "requests", "share", "latency"], timeline=False)
    try:
        async with AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as client:
            # A short warm-up opens connections so the comparison measures balancing.
            for _ in range(30):
                await client.get("http://demo/")

            async def send() -> httpx.Response:
                return await client.get("http://demo/")

            traffic = asyncio.ensure_future(
                run_open_loop(send, rate=opts.rate, duration=opts.duration, result=result)
            )
            while not traffic.done():
                table.update(_rows(result))
                await asyncio.wait([traffic], timeout=0.5)
            await traffic
            table.update(_rows(result))
    finally:
        table.close()
    return result


async def _main(opts: DemoOptions, out: TextIO) -> int:
    view = make_view(out)
    if opts.consul:
        view.heading(
            "meshlib demo --consul: three upstreams on 127.0.0.1, discovered through Consul"
        )
        upstreams = [spawn_upstream(b) for b in _behaviours(opts.seed, slow_gamma=False)]
        try:
            result = await run_consul_act(upstreams, _NAMES, view, rate=opts.rate)
        finally:
            for u in upstreams:
                u.stop()
        view.summary(
            "What the mesh did",
            [
                "followed a deregistration, a maintenance window and its end within a second,",
                "kept serving the last known endpoints while Consul was frozen, and recovered;",
                f"callers saw {result.error_count} errors in {result.sent} requests.",
            ],
        )
        return 0 if result.sent else 1
    view.heading("meshlib demo: three upstreams on 127.0.0.1, no setup, no Consul")
    view.note(
        "gamma answers 20% of requests 50 ms late; open-loop traffic at "
        f"{opts.rate:.0f} req/s for {opts.duration:.0f} s per balancer."
    )
    upstreams = [spawn_upstream(b) for b in _behaviours(opts.seed)]
    try:
        view.note(
            "upstreams: "
            + ", ".join(f"{n}=127.0.0.1:{u.port}" for n, u in zip(_NAMES, upstreams, strict=True))
        )
        p2c = await _drive(
            "p2c-peak-ewma", "P2C over Peak-EWMA (meshlib's default)", upstreams, opts, view
        )
        rr = await _drive("round-robin", "Round robin (for comparison)", upstreams, opts, view)
        resilience = await run_resilience_act(upstreams, _NAMES, view, rate=opts.rate)
        await _trace_one_retried_call(upstreams, view)
    finally:
        for u in upstreams:
            u.stop()
    ratio = rr.p(99) / p2c.p(99) if p2c.p(99) > 0 else float("inf")
    view.summary(
        "What the mesh did",
        [
            f"P2C sent {p2c.share('gamma'):.1%} of requests to the slow replica "
            f"(round robin {rr.share('gamma'):.1%});",
            f"p99 {p2c.p(99) * 1000:.1f} ms vs {rr.p(99) * 1000:.1f} ms with round robin "
            f"({ratio:.1f}x better);",
            f"with beta failing, callers saw {resilience.error_count} errors in "
            f"{resilience.sent} requests (retries, ejection, one probe, recovery).",
        ],
    )
    return 0


async def _trace_one_retried_call(upstreams: Sequence[SpawnedUpstream], view: View) -> None:
    """Print the trace of one call whose first attempt meets a failing beta."""
    exporter = memory_exporter()
    if exporter is None:
        view.note("(install 'meshlib[sdk]' to see the trace of a retried call here)")
        return
    installed = configure(traces="none", metrics_exporter="none", span_exporter=exporter)
    beta = upstreams[1]
    await asyncio.to_thread(beta.control, fail_fraction=1.0)
    try:
        order = [upstreams[1], upstreams[0]]
        discovery = StaticDiscovery({"demo": [f"127.0.0.1:{u.port}" for u in order]})
        config = MeshConfig(balancer="round-robin")
        async with AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as client:
            await client.get("http://demo/")
    finally:
        await asyncio.to_thread(beta.control, fail_fraction=0.0)
    installed.shutdown()
    view.summary(
        "The trace of one call that met the failing beta (meshlib.telemetry)",
        format_trace_tree(list(exporter.get_finished_spans())),
    )


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns the process exit code."""
    return asyncio.run(_main(opts, out))
