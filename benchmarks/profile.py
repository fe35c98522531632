"""``python -m benchmarks.profile``: where meshlib's client path spends its CPU.

Why: when a CPU target is missed, the next question is which functions to make cheaper. This
runs one client variant against three private nginx replicas under ``cProfile`` (after a
warm-up, so connection set-up is not in the profile) and prints the top functions by own time
and by cumulative time. It is a diagnostic, not a measurement: cProfile inflates the cost of
small functions, so read the ranking, not the absolute numbers.

    .venv/bin/python -m benchmarks.profile                  # AsyncMeshClient, c=1
    .venv/bin/python -m benchmarks.profile --client engine  # httpx + AsyncEngine, for contrast
    .venv/bin/python -m benchmarks.profile --sync           # MeshClient
    .venv/bin/python -m benchmarks.profile --connect mesh-connect   # over Consul Connect mTLS

``--connect VARIANT`` profiles one of the ``connect`` scenario's clients (``mesh``,
``mesh-connect``, ``httpx``, ``httpx-tls``) against that scenario's servers (FakeConsul's CA, a
plain and an mTLS nginx) instead of the three replicas.

Every mode counts the process's CPU time (``time.process_time``), not wall time, so the waits
of a busy machine do not show up as socket or epoll time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from benchmarks.clients import make_async_client, make_sync_client
from benchmarks.connect_worker import VARIANTS as CONNECT_VARIANTS
from benchmarks.connect_worker import make_client as make_connect_client
from benchmarks.scenarios.connect import servers as connect_servers
from benchmarks.servers import nginx_replicas

__all__ = ["main", "profile_async", "profile_connect", "profile_sync"]


async def _async_loop(client: str, urls: list[str], requests: int, conc: int) -> cProfile.Profile:
    return await _profile_client(*make_async_client(client, urls), requests, conc)


async def _profile_client(
    http: httpx.AsyncClient, next_url: Callable[[], str], requests: int, conc: int
) -> cProfile.Profile:
    prof = cProfile.Profile(time.process_time)
    async with http:
        for _ in range(200):
            await http.get(next_url())

        async def worker(n: int) -> None:
            for _ in range(n):
                await http.get(next_url())

        prof.enable()
        await asyncio.gather(*(worker(requests // conc) for _ in range(conc)))
        prof.disable()
    return prof


def profile_async(client: str, urls: list[str], requests: int, conc: int) -> cProfile.Profile:
    """A profile of ``requests`` async GETs by ``conc`` tasks (warm-up excluded)."""
    return asyncio.run(_async_loop(client, urls, requests, conc))


def profile_sync(client: str, urls: list[str], requests: int) -> cProfile.Profile:
    """A profile of ``requests`` sync GETs on one thread (warm-up excluded)."""
    http, next_url = make_sync_client(client, urls)
    prof = cProfile.Profile(time.process_time)
    with http:
        for _ in range(200):
            http.get(next_url())
        prof.enable()
        for _ in range(requests):
            http.get(next_url())
        prof.disable()
    return prof


def profile_connect(variant: str, requests: int, conc: int) -> cProfile.Profile:
    """A profile of one ``connect`` scenario client, kept-alive (warm-up excluded)."""
    with connect_servers() as (consul, plain, tls, certs):
        spec: dict[str, Any] = {
            "variant": variant,
            "keepalive": True,
            "plain_url": plain.url,
            "tls_url": tls.url,
            "consul_port": consul.port,
            "certs": certs,
        }
        return asyncio.run(_profile_client(*make_connect_client(spec), requests, conc))


_AREAS = (
    ("meshlib engine", "src/meshlib/engine/"),
    ("meshlib mesh layer", "src/meshlib/"),
    ("httpx", "/httpx/"),
    ("httpcore / h11", "/httpcore/"),
    ("httpcore / h11", "/h11/"),
    ("aiohttp", "aiohttp"),
    ("stdlib http.cookiejar / urllib", "/http/cookiejar"),
    ("stdlib http.cookiejar / urllib", "/urllib/"),
    ("stdlib email (headers)", "/email/"),
    ("asyncio TLS transport (sslproto)", "/asyncio/sslproto"),
    ("asyncio event loop", "/asyncio/"),
    ("OpenSSL (SSLObject read / write)", "_ssl._SSLSocket"),
    ("socket I/O and epoll", "method 'poll'"),
    ("socket I/O and epoll", "method 'send'"),
    ("socket I/O and epoll", "method 'recv"),
)


def by_area(stats: pstats.Stats, requests: int) -> list[tuple[str, float]]:
    """Own time per area (µs per request), largest first: which layer to optimise."""
    totals: dict[str, float] = {}
    for func, row in stats.stats.items():  # type: ignore[attr-defined]
        filename, _, name = func
        where = f"{filename} {name}"
        area = next((a for a, needle in _AREAS if needle in where), "other (builtins, stdlib)")
        totals[area] = totals.get(area, 0.0) + row[2]
    return sorted(((a, t / requests * 1e6) for a, t in totals.items()), key=lambda x: -x[1])


def report(prof: cProfile.Profile, requests: int, top: int) -> str:
    """Top functions by own time and by cumulative time, with µs per request."""
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    out.write(
        f"profiled {requests} requests: {total / requests * 1e6:.0f} µs/request under cProfile\n"
    )
    out.write("\nown time by area (µs/request under cProfile):\n")
    for area, us in by_area(stats, requests):
        out.write(f"  {area:<34}{us:8.1f}\n")
    for key in ("tottime", "cumulative"):
        out.write(f"\n--- top {top} by {key} ---\n")
        stats.sort_stats(key).print_stats(top)
    out.write(f"\n--- meshlib's own functions (src/meshlib), top {top} by tottime ---\n")
    stats.sort_stats("tottime").print_stats(r"src/meshlib/", top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--client", default="mesh", help="mesh (default), engine, httpx, aiohttp")
    p.add_argument("--sync", action="store_true", help="profile the sync client")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--connect",
        choices=CONNECT_VARIANTS,
        help="profile this client of the connect scenario (FakeConsul CA, plain and mTLS nginx)",
    )
    args = p.parse_args(argv)
    if args.connect:
        prof = profile_connect(args.connect, args.requests, args.concurrency)
        sys.stdout.write(report(prof, args.requests, args.top))
        return 0
    with nginx_replicas(3) as replicas:
        urls = [s.url for s in replicas]
        if args.sync:
            prof = profile_sync(args.client, urls, args.requests)
        else:
            prof = profile_async(args.client, urls, args.requests, args.concurrency)
    sys.stdout.write(report(prof, args.requests, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
