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
from meshlib.demo_consul import run_consul_act
from meshlib.demo_resilience import run_resilience_act
from meshlib.discovery.static import StaticDiscovery
from meshlib.loadgen import LoadResult, run_open_loop
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


async def _drive(
    balancer: str, upstreams: Sequence[SpawnedUpstream], opts: DemoOptions
) -> LoadResult:
    discovery = StaticDiscovery({"demo": [f"127.0.0.1:{u.port}" for u in upstreams]})
    config = MeshConfig(balancer=balancer)
    async with AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as client:
        # A short warm-up opens connections so the comparison measures balancing, not connects.
        for _ in range(30):
            await client.get("http://demo/")

        async def send() -> httpx.Response:
            return await client.get("http://demo/")

        return await run_open_loop(send, rate=opts.rate, duration=opts.duration)


def _report(out: TextIO, title: str, result: LoadResult) -> None:
    out.write(f"\n{title}\n")
    out.write(f"  {'endpoint':<10}{'requests':>10}{'share':>9}\n")
    for name in _NAMES:
        label = name + (" (slow)" if name == "gamma" else "")
        out.write(f"  {label:<14}{result.served_by[name]:>6}{result.share(name):>9.1%}\n")
    out.write(
        f"  latency  p50 {result.p(50) * 1000:6.2f} ms   p99 {result.p(99) * 1000:6.2f} ms   "
        f"max {max(result.latencies, default=0.0) * 1000:6.1f} ms   "
        f"errors {result.error_count}   sent {result.sent}\n"
    )


async def _main(opts: DemoOptions, out: TextIO) -> int:
    if opts.consul:
        out.write(
            "meshlib demo --consul: three upstreams on 127.0.0.1, discovered through Consul.\n"
        )
        upstreams = [spawn_upstream(b) for b in _behaviours(opts.seed, slow_gamma=False)]
        try:
            result = await run_consul_act(upstreams, _NAMES, out, rate=opts.rate)
        finally:
            for u in upstreams:
                u.stop()
        return 0 if result.sent else 1
    out.write(
        "meshlib demo: three upstreams on 127.0.0.1 (gamma answers 20% of requests 50 ms late),\n"
        f"open-loop traffic at {opts.rate:.0f} req/s for {opts.duration:.0f} s per balancer.\n"
    )
    upstreams = [spawn_upstream(b) for b in _behaviours(opts.seed)]
    try:
        out.write(
            "  upstreams: "
            + ", ".join(f"{n}=127.0.0.1:{u.port}" for n, u in zip(_NAMES, upstreams, strict=True))
            + "\n"
        )
        out.flush()
        p2c = await _drive("p2c-peak-ewma", upstreams, opts)
        _report(out, "P2C over Peak-EWMA (meshlib's default)", p2c)
        out.flush()
        rr = await _drive("round-robin", upstreams, opts)
        _report(out, "Round robin (for comparison)", rr)
        out.flush()
        resilience = await run_resilience_act(upstreams, _NAMES, out, rate=opts.rate)
        await _trace_one_retried_call(upstreams, out)
    finally:
        for u in upstreams:
            u.stop()
    ratio = rr.p(99) / p2c.p(99) if p2c.p(99) > 0 else float("inf")
    out.write(
        f"\nWhat the mesh did: P2C sent {p2c.share('gamma'):.1%} of requests to the slow replica "
        f"(round robin {rr.share('gamma'):.1%}); p99 {p2c.p(99) * 1000:.1f} ms vs "
        f"{rr.p(99) * 1000:.1f} ms ({ratio:.1f}x better); with beta failing, callers saw "
        f"{resilience.error_count} errors in {resilience.sent} requests.\n"
    )
    return 0


async def _trace_one_retried_call(upstreams: Sequence[SpawnedUpstream], out: TextIO) -> None:
    """Print the trace of one call whose first attempt meets a failing beta."""
    try:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        out.write("\n(install 'meshlib[sdk]' to see the trace of a retried call here)\n")
        return
    exporter = InMemorySpanExporter()
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
    out.write("\nThe trace of one call that met the failing beta (meshlib.telemetry):\n")
    for line in format_trace_tree(list(exporter.get_finished_spans())):
        out.write(f"  {line}\n")


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; returns the process exit code."""
    return asyncio.run(_main(opts, out))
