"""Worker kind ``connect-closed``: one client variant of the ``connect`` scenario, closed loop.

Why a kind of its own: the ``connect`` variants are not the replica-spreading clients of
``clients.py``. They call one server each (plain nginx, or nginx requiring a Connect client
certificate), the mesh variants find it through Consul (the parent's FakeConsul) and the Connect
variant gets its leaf from that agent, so the worker needs the agent's address and, for stock
httpx over TLS, the certificate files the parent wrote. The loop itself is ``loops.measure_async``
(same warm-up, same CPU window, same latencies as every closed-loop scenario).

Spec keys: ``variant`` (``httpx``, ``httpx-tls``, ``mesh``, ``mesh-connect``), ``keepalive``
(False: ``max_keepalive_connections=0``, so every request opens a connection), ``plain_url``,
``tls_url``, ``consul_port``, ``certs`` (a directory with ``web.crt``, ``web.key``, ``roots.pem``)
and the closed-loop keys (``concurrency``, ``requests``, ``warmup``, ``max_seconds``, ``latency``).
The result adds ``warmup_connections``: how many connections the server saw during the warm-up
(nginx puts its connection serial number in ``X-Upstream``), to prove keep-alive on or off.

Kind ``connect-paired`` measures (d) against (c) precisely: both meshlib clients in one process,
kept alive, batch against batch (``batch`` requests each, ``pairs`` times, alternating), CPU
time per request of each batch. Across processes a shared machine moves a round's CPU per
request by tens of microseconds; two batches a few milliseconds apart see the same machine.
"""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
import statistics
from collections.abc import Callable
from typing import Any

import httpx

import meshlib
from benchmarks.clients import TIMEOUT
from benchmarks.loops import measure_async
from meshlib.connect.settings import ConnectSettings

__all__ = ["VARIANTS", "connect_closed", "connect_paired"]

Spec = dict[str, Any]
VARIANTS = ("httpx", "httpx-tls", "mesh", "mesh-connect")
PLAIN_SERVICE = "api-plain"
CONNECT_SERVICE = "api"
CALLER = "web"


def limits(keepalive: bool) -> httpx.Limits:
    """The same limits for every variant. With keep-alive, up to 100 idle connections (not
    httpx's 20): every request here goes to one origin, and at c = 32 a pool keeping 20 would
    close and reopen 12 connections per round of requests, putting handshakes in the number."""
    return httpx.Limits(max_connections=100, max_keepalive_connections=100 if keepalive else 0)


def _tls_context(certs: str) -> ssl.SSLContext:
    """Stock httpx over mTLS: trust the Connect roots, present the caller's leaf. Connect leaves
    carry only a SPIFFE URI, so no host name can match; this reference checks the chain only."""
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "roots.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(os.path.join(certs, "web.crt"), os.path.join(certs, "web.key"))
    return ctx


def _mesh_config(spec: Spec, connect: bool) -> meshlib.MeshConfig:
    return meshlib.MeshConfig(
        discovery="consul",
        consul=meshlib.ConsulSettings(host="127.0.0.1", port=int(spec["consul_port"])),
        engine="fast",
        balancer="p2c-peak-ewma",
        connect=ConnectSettings(enabled=connect, service=CALLER if connect else None),
    )


def make_client(spec: Spec) -> tuple[httpx.AsyncClient, Callable[[], str]]:
    """The client of ``spec["variant"]`` and the function giving each request's URL."""
    variant = spec["variant"]
    common: dict[str, Any] = {"timeout": TIMEOUT, "limits": limits(bool(spec["keepalive"]))}
    url: str
    if variant == "httpx":
        client = httpx.AsyncClient(**common)
        url = spec["plain_url"].rstrip("/") + "/"
    elif variant == "httpx-tls":
        client = httpx.AsyncClient(verify=_tls_context(spec["certs"]), **common)
        url = spec["tls_url"].rstrip("/") + "/"
    elif variant in ("mesh", "mesh-connect"):
        connect = variant == "mesh-connect"
        client = meshlib.AsyncMeshClient(config=_mesh_config(spec, connect), **common)
        url = f"http://{CONNECT_SERVICE if connect else PLAIN_SERVICE}/"
    else:
        raise ValueError(f"unknown connect variant {variant!r}; use one of {VARIANTS}")
    return client, lambda: url


async def _run(spec: Spec) -> Spec:
    client, next_url = make_client(spec)
    out = await measure_async(client, next_url, spec)
    out["warmup_connections"] = len(out.pop("warmup_served_by"))
    return out


def connect_closed(spec: Spec) -> Spec:
    """``concurrency`` tasks looping ``client.get`` against the variant's server."""
    return asyncio.run(_run(spec))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _paired(spec: Spec) -> Spec:
    variants = ("mesh", "mesh-connect")
    clients = {v: make_client({**spec, "variant": v, "keepalive": True}) for v in variants}
    per_request: dict[str, list[float]] = {v: [] for v in variants}
    errors = 0
    batch = int(spec["batch"])
    for client, next_url in clients.values():
        for _ in range(int(spec["warmup"])):
            errors += (await client.get(next_url())).status_code != 200
    for _ in range(int(spec["pairs"])):
        for v in variants:
            client, next_url = clients[v]
            c0 = _cpu()
            for _ in range(batch):
                errors += (await client.get(next_url())).status_code != 200
            per_request[v].append((_cpu() - c0) / batch * 1e6)
    for client, _ in clients.values():
        await client.aclose()
    plain, connect = per_request["mesh"], per_request["mesh-connect"]
    return {
        "plain_us": statistics.median(plain),
        "connect_us": statistics.median(connect),
        "ratio": statistics.median(c / p for c, p in zip(connect, plain, strict=True)),
        "diff_us": statistics.median(c - p for c, p in zip(connect, plain, strict=True)),
        "errors": {"non-200": errors} if errors else {},
    }


def connect_paired(spec: Spec) -> Spec:
    """meshlib plaintext and Connect clients, batch against batch in one process."""
    return asyncio.run(_paired(spec))
