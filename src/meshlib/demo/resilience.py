"""The demo's resilience act: one upstream fails mid-run and the mesh rides it out.

Traffic flows through ``AsyncMeshClient`` with retries on while ``beta`` is switched (through
its ``/control`` endpoint) to answer every request with 503 for a few seconds and then back.
Once a second the act samples what callers saw and what the mesh did: requests, caller-visible
errors, extra upstream requests (retries and requeues), each endpoint's share and beta's breaker
state; accrual's log lines (ejection, probe, revival) are collected as events. The breaker's
backoff is shortened to 1 s so the whole cycle fits in the demo.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

import httpx

from meshlib.accrual.health import AccrualPolicy
from meshlib.client import AsyncMeshClient
from meshlib.config import MeshConfig
from meshlib.demo.loadgen import LoadResult, run_open_loop
from meshlib.demo.view import View
from meshlib.discovery.static import StaticDiscovery
from meshlib.upstream import SpawnedUpstream

__all__ = ["run_resilience_act"]


class _Events(logging.Handler):
    """Collects meshlib's state-change log lines with the act's elapsed time."""

    def __init__(self, start: float) -> None:
        super().__init__(logging.INFO)
        self.start = start
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        elapsed = asyncio.get_event_loop().time() - self.start
        self.lines.append(f"{elapsed:5.1f}s  {record.getMessage()}")


def _upstream_total(upstreams: Sequence[SpawnedUpstream]) -> int:
    return sum(int(u.state()["stats"]["total"]) for u in upstreams)


async def run_resilience_act(
    upstreams: Sequence[SpawnedUpstream],
    names: Sequence[str],
    view: View,
    *,
    rate: float,
    fail_at: float = 2.0,
    recover_at: float = 5.0,
    duration: float = 8.0,
) -> LoadResult:
    """Drive traffic while ``upstreams[1]`` fails between ``fail_at`` and ``recover_at``."""
    beta, beta_name = upstreams[1], names[1]
    addr = {f"127.0.0.1:{u.port}": n for u, n in zip(upstreams, names, strict=True)}
    # Round robin keeps sending beta its share, so the breaker alone must protect callers;
    # P2C's failure score would mostly steer around beta before the breaker is needed.
    config = MeshConfig(
        balancer="round-robin", accrual=AccrualPolicy(backoff_min=1.0, backoff_max=2.0)
    )
    discovery = StaticDiscovery({"demo": list(addr)})
    loop = asyncio.get_running_loop()
    events = _Events(loop.time())
    logger = logging.getLogger("meshlib.accrual")
    logger.addHandler(events)
    level = logger.level
    logger.setLevel(logging.INFO)
    table = view.table(
        f"Resilience: {beta_name} answers every request with 503 from {fail_at:.0f} s to "
        f"{recover_at:.0f} s (round robin, retries on, breaker backoff 1 s for the demo)",
        ["t", "sent", "errors", "extra", *names, f"{beta_name} state"],
        timeline=True,
    )
    rows: list[list[str]] = []
    result = LoadResult()
    try:
        async with AsyncMeshClient(discovery=discovery, config=config, timeout=5.0) as client:

            async def send() -> httpx.Response:
                return await client.get("http://demo/")

            base = await asyncio.to_thread(_upstream_total, upstreams)
            traffic = asyncio.ensure_future(
                run_open_loop(send, rate=rate, duration=duration, result=result)
            )
            start = loop.time()
            prev_sent, prev_err, prev_total = 0, 0, base
            prev_served: Counter[str] = Counter()
            flipped = recovered = False
            for second in range(1, int(duration) + 1):
                await asyncio.sleep(max(0.0, start + second - loop.time()))
                now = loop.time() - start
                if not flipped and now >= fail_at:
                    await asyncio.to_thread(beta.control, fail_fraction=1.0)
                    flipped = True
                if not recovered and now >= recover_at:
                    await asyncio.to_thread(beta.control, fail_fraction=0.0)
                    recovered = True
                total = await asyncio.to_thread(_upstream_total, upstreams)
                sent, errors = result.sent, result.error_count
                served = Counter(result.served_by)
                state = client.mesh_state()["services"].get("demo", {})
                beta_state = next(
                    (
                        e["state"]
                        for e in state.get("endpoints", ())
                        if addr[e["address"]] == beta_name
                    ),
                    "?",
                )
                extra = (total - prev_total) - (sent - prev_sent)
                rows.append(
                    [
                        f"{second}s",
                        str(sent - prev_sent),
                        str(errors - prev_err),
                        str(max(0, extra)),
                        *(str(served[n] - prev_served[n]) for n in names),
                        beta_state,
                    ]
                )
                table.update(rows)
                prev_sent, prev_err, prev_total, prev_served = sent, errors, total, served
            await traffic
    finally:
        table.close()
        logger.removeHandler(events)
        logger.setLevel(level)
        await asyncio.to_thread(beta.control, fail_fraction=0.0)
    view.summary(
        "Breaker events",
        [
            *(events.lines or ["(none)"]),
            f"caller-visible errors: {result.error_count} of {result.sent} "
            f"(p99 {result.p(99) * 1000:.1f} ms)",
        ],
    )
    return result
