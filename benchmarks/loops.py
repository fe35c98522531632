"""The measurement loops that run inside a worker process (one client variant per process).

Why these rules:

* **CPU per request** is ``getrusage(RUSAGE_SELF)`` user + system time of the worker process
  (all its threads) across the measured loop only, divided by the requests it completed. The
  servers run in other processes, so their CPU is not counted; interpreter start-up, imports,
  client construction and warm-up are outside the window.
* **Warm-up first**: connections are opened and caches filled before the window, so the number
  is the steady-state cost of a request on a kept-alive connection.
* **Bounded**: every loop stops at its request count or its time limit, whichever comes first,
  and reports how many requests it really made.
* **Closed-loop latency** (``latency=True``) is the wall time of each ``await client.get`` at
  concurrency 1; the open-loop driver (``meshlib.demo.loadgen``) instead measures from the moment a
  request was *due*, so a stall is charged to every request queued behind it.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks.clients import make_async_client, make_sync_client
from benchmarks.model import nearest_rank
from meshlib.demo.loadgen import run_open_loop

__all__ = ["closed_async", "closed_sync", "measure_async", "open_loop"]

Spec = dict[str, Any]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Tally:
    """Counts shared by the tasks of one loop."""

    def __init__(self, count: int, max_seconds: float, latency: bool, served: bool) -> None:
        self.remaining = count
        self.deadline = time.perf_counter() + max_seconds
        self.done = 0
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] | None = [] if latency else None
        self.served: Counter[str] | None = Counter() if served else None

    def more(self) -> bool:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True

    def record(self, response: httpx.Response | None, error: str | None, started: float) -> None:
        if self.latencies is not None:
            self.latencies.append(time.perf_counter() - started)
        self.done += 1
        if error is not None:
            self.errors[error] += 1
        elif response is not None:
            if response.status_code != 200:
                self.errors[str(response.status_code)] += 1
            if self.served is not None:
                self.served[response.headers.get("x-upstream", "?")] += 1


def _summary(tally: _Tally, cpu: float, wall: float) -> Spec:
    out: Spec = {
        "requests": tally.done,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us_per_request": cpu / tally.done * 1e6 if tally.done else float("nan"),
        "errors": dict(tally.errors),
    }
    if tally.latencies is not None:
        ordered = sorted(tally.latencies)
        out["p50_ms"] = nearest_rank(ordered, 50) * 1e3
        out["p99_ms"] = nearest_rank(ordered, 99) * 1e3
    return out


async def _async_drive(client: httpx.AsyncClient, next_url: Any, conc: int, t: _Tally) -> None:
    async def worker() -> None:
        while t.more():
            started = time.perf_counter()
            try:
                response = await client.get(next_url())
            except httpx.HTTPError as exc:
                t.record(None, type(exc).__name__, started)
                continue
            t.record(response, None, started)

    await asyncio.gather(*(worker() for _ in range(conc)))


async def _closed_async(spec: Spec) -> Spec:
    client, next_url = make_async_client(
        spec["client"], spec["urls"], spec.get("balancer", ""), spec.get("mesh")
    )
    return await measure_async(client, next_url, spec)


async def measure_async(client: httpx.AsyncClient, next_url: Any, spec: Spec) -> Spec:
    """Warm-up, then the measured closed loop, of a client built by the caller (closed after)."""
    conc = int(spec["concurrency"])
    async with client:
        warm = _Tally(int(spec["warmup"]), float(spec["max_seconds"]), False, True)
        await _async_drive(client, next_url, conc, warm)
        t = _Tally(
            int(spec["requests"]), float(spec["max_seconds"]), bool(spec.get("latency")), False
        )
        c0, w0 = _cpu(), time.perf_counter()
        await _async_drive(client, next_url, conc, t)
        cpu, wall = _cpu() - c0, time.perf_counter() - w0
    out = _summary(t, cpu, wall)
    out["warmup_served_by"] = dict(warm.served or {})
    out["warmup_errors"] = dict(warm.errors)
    out["total_requests"] = warm.done + t.done
    return out


def closed_async(spec: Spec) -> Spec:
    """``concurrency`` tasks, each looping ``client.get`` until the shared count runs out."""
    return asyncio.run(_closed_async(spec))


def _sync_drive(client: httpx.Client, next_url: Any, t: _Tally) -> None:
    while t.more():
        started = time.perf_counter()
        try:
            response = client.get(next_url())
        except httpx.HTTPError as exc:
            t.record(None, type(exc).__name__, started)
            continue
        t.record(response, None, started)


def closed_sync(spec: Spec) -> Spec:
    """One thread looping ``client.get`` (the sync twin of ``closed_async`` at concurrency 1)."""
    client, next_url = make_sync_client(
        spec["client"], spec["urls"], spec.get("balancer", ""), spec.get("mesh")
    )
    with client:
        warm = _Tally(int(spec["warmup"]), float(spec["max_seconds"]), False, True)
        _sync_drive(client, next_url, warm)
        t = _Tally(
            int(spec["requests"]), float(spec["max_seconds"]), bool(spec.get("latency")), False
        )
        c0, w0 = _cpu(), time.perf_counter()
        _sync_drive(client, next_url, t)
        cpu, wall = _cpu() - c0, time.perf_counter() - w0
    out = _summary(t, cpu, wall)
    out["warmup_served_by"] = dict(warm.served or {})
    out["warmup_errors"] = dict(warm.errors)
    out["total_requests"] = warm.done + t.done
    return out


async def _open_loop(spec: Spec) -> Spec:
    rate = float(spec["rate"])
    client, next_url = make_async_client(
        spec["client"], spec["urls"], spec.get("balancer", ""), spec.get("mesh")
    )
    async with client:

        async def send() -> httpx.Response:
            return await client.get(next_url())

        # Warm-up: open connections and let the balancer see every replica answer (discarded).
        for _ in range(int(spec["warmup"])):
            await send()
        await run_open_loop(send, rate=rate, duration=float(spec["warmup_seconds"]))
        result = await run_open_loop(send, rate=rate, duration=float(spec["duration"]))
    ordered = sorted(result.latencies)
    total = sum(result.served_by.values())
    return {
        "sent": result.sent,
        "p50_ms": nearest_rank(ordered, 50) * 1e3,
        "p99_ms": nearest_rank(ordered, 99) * 1e3,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1e3,
        "served_by": dict(result.served_by),
        "shares": {k: v / total for k, v in result.served_by.items()} if total else {},
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "errors": dict(result.errors),
        "dropped": result.dropped,
        "duration_s": result.duration,
    }


def open_loop(spec: Spec) -> Spec:
    """``run_open_loop`` (``meshlib.demo.loadgen``) at ``rate`` req/s for ``duration`` s."""
    return asyncio.run(_open_loop(spec))
