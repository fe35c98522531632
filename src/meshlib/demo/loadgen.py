"""An open-loop load generator for the demo and the benchmarks.

Closed-loop drivers (send, wait, send) hide tail latency: when the server stalls, the driver
stalls with it and the stall is counted once (coordinated omission). This driver schedules
requests at a fixed rate whatever happens and measures each latency from the moment the request
was *due*, so a slow replica shows up in p99 the way callers would feel it. It is bounded in
both count and time, and caps the requests in flight so a dead upstream cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

__all__ = ["LoadResult", "percentile", "run_open_loop"]


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    """What one open-loop run saw: latencies, who served, and what failed."""

    latencies: list[float] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    duration: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def share(self, name: str) -> float:
        total = sum(self.served_by.values())
        return self.served_by[name] / total if total else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + sum(c for s, c in self.statuses.items() if s >= 500)


async def run_open_loop(
    send: Callable[[], Awaitable[httpx.Response]],
    *,
    rate: float,
    duration: float,
    max_in_flight: int = 512,
    served_by_header: str = "x-upstream",
    result: LoadResult | None = None,
) -> LoadResult:
    """Call ``send`` ``rate`` times a second for ``duration`` seconds, open loop.

    Pass ``result`` to watch the counters fill while the run is going (the demo's timeline).
    """
    result = result if result is not None else LoadResult()
    interval = 1.0 / rate
    total = int(rate * duration)
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(due: float) -> None:
        try:
            response = await send()
        except httpx.HTTPError as exc:
            result.errors[type(exc).__name__] += 1
            result.latencies.append(loop.time() - due)
            return
        result.latencies.append(loop.time() - due)
        result.statuses[response.status_code] += 1
        result.served_by[response.headers.get(served_by_header, "?")] += 1

    for i in range(total):
        due = start + i * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            result.dropped += 1
            continue
        task = loop.create_task(one(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=max(5.0, duration))
    for task in in_flight:
        task.cancel()
    result.duration = loop.time() - start
    return result
