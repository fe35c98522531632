"""``connect``: what Consul Connect's mutual TLS costs a meshlib client, per request and per
new connection.

Why: Connect puts a TLS handshake on every new connection and encryption on every request;
the promise is that kept-alive connections make that nearly free (≤ 1.15x meshlib plaintext
CPU per request) and that meshlib over mTLS still costs less than a third of stock httpx over
plain HTTP (≤ 0.35x at c = 1). The parent runs ``meshlib.testing.FakeConsul`` with its Connect
CA in its own process (the parent's CPU is never measured), fetches the ``api`` leaf and the
roots over HTTP the way a Connect-native server would, and starts two single-worker keep-alive
nginx servers: plain HTTP (registered as ``api-plain``) and HTTPS that presents the ``api`` leaf
and requires a client certificate chaining to the Connect roots (``ssl_verify_client on``,
registered as the Connect-native ``api``). Variants, each a fresh worker process
(``connect_worker``), interleaved, closed loop:

* (a) stock ``httpx.AsyncClient()`` over plain HTTP to the plain nginx: the baseline;
* (b) stock httpx over TLS to the mTLS nginx, presenting the ``web`` leaf (reference; checks
  the chain only, not the SPIFFE identity);
* (c) ``AsyncMeshClient`` plaintext, Consul discovery, ``http://api-plain/``;
* (d) ``AsyncMeshClient`` over Connect (``ConnectSettings(enabled=True, service="web")``),
  ``http://api/``, keep-alive;
* (e) = (d) and (f) = (c) with ``max_keepalive_connections=0``: every request opens a connection,
  so (e) - (f), paired per round, is the CPU of setting up one mTLS connection; stock httpx gets
  the same pair as a reference.

c = 1 for every variant, and c = 32 for the kept-alive ones. One more worker runs (c) and (d)
in one process, batch against batch (``connect_worker.connect_paired``): the precise (d) ÷ (c),
free of the drift between fresh processes on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import Result, Variant, interleave
from benchmarks.scenarios.common import (
    at_most,
    check_clean,
    column,
    paired_difference,
    ratio_target,
)
from benchmarks.servers import Server, nginx_mtls, nginx_replicas
from meshlib.testing.fake_consul import FakeConsul

__all__ = ["NAME", "TARGET_VS_HTTPX", "TARGET_VS_PLAIN", "run", "servers"]

NAME = "connect"
TARGET_VS_PLAIN = 1.15
TARGET_VS_HTTPX = 0.35
# name: (label, worker variant, keep-alive)
_VARIANTS: dict[str, tuple[str, str, bool]] = {
    "httpx": ("(a) httpx.AsyncClient() plain HTTP", "httpx", True),
    "httpx-tls": ("(b) httpx.AsyncClient() mTLS", "httpx-tls", True),
    "mesh": ("(c) meshlib plaintext", "mesh", True),
    "mesh-connect": ("(d) meshlib Connect mTLS", "mesh-connect", True),
    "mesh-connect-new": ("(e) meshlib Connect mTLS, no keep-alive", "mesh-connect", False),
    "mesh-new": ("(f) meshlib plaintext, no keep-alive", "mesh", False),
    "httpx-tls-new": ("httpx mTLS, no keep-alive", "httpx-tls", False),
    "httpx-new": ("httpx plain HTTP, no keep-alive", "httpx", False),
}
_KEPT_ALIVE = [n for n, v in _VARIANTS.items() if v[2]]


def _get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"FakeConsul answered {path} with {response.status_code}")
    return response.json()


def _write(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _certificates(consul: FakeConsul, tmp: str) -> dict[str, str]:
    """The roots and the ``api`` and ``web`` leaves, from the agent's HTTP API, as files."""
    base = f"http://127.0.0.1:{consul.port}"
    with httpx.Client(base_url=base, trust_env=False, timeout=10.0) as client:
        roots = _get(client, "/v1/agent/connect/ca/roots")
        files = {"roots": _write(os.path.join(tmp, "roots.pem"), _roots_pem(roots))}
        for service in ("api", "web"):
            leaf = _get(client, f"/v1/agent/connect/ca/leaf/{service}")
            files[f"{service}.crt"] = _write(os.path.join(tmp, f"{service}.crt"), leaf["CertPEM"])
            files[f"{service}.key"] = _write(
                os.path.join(tmp, f"{service}.key"), leaf["PrivateKeyPEM"]
            )
    return files


def _roots_pem(doc: dict[str, Any]) -> str:
    pems = [r["RootCert"].strip() for r in doc["Roots"]]
    pems += [i.strip() for r in doc["Roots"] for i in (r.get("IntermediateCerts") or ())]
    return "\n".join(pems) + "\n"


@contextlib.contextmanager
def servers() -> Iterator[tuple[FakeConsul, Server, Server, str]]:
    """FakeConsul with ``api`` (Connect-native, mTLS nginx) and ``api-plain`` (plain nginx)
    registered, and the directory holding the certificate files (removed afterwards)."""
    tmp = tempfile.mkdtemp(prefix="meshlib-bench-connect-")
    try:
        with FakeConsul(run_checks=False) as consul:
            files = _certificates(consul, tmp)
            with (
                nginx_replicas(1, header="$connection") as (plain,),
                nginx_mtls(files["api.crt"], files["api.key"], files["roots"]) as tls,
            ):
                host, port = tls.address.rsplit(":", 1)
                consul.register_service(
                    "api",
                    service_id="api-1",
                    address=host,
                    port=int(port),
                    connect={"Native": True},
                )
                host, port = plain.address.rsplit(":", 1)
                consul.register_service(
                    "api-plain", service_id="api-plain-1", address=host, port=int(port)
                )
                yield consul, plain, tls, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _spec(name: str, conc: int, opts: Options, where: dict[str, Any]) -> Result:
    _, variant, keepalive = _VARIANTS[name]
    return {
        "kind": "connect-closed",
        "variant": variant,
        "keepalive": keepalive,
        **where,
        "concurrency": conc,
        "requests": opts.scale(3000, 600) if keepalive else opts.scale(1000, 300),
        "warmup": (max(300, 20 * conc) if keepalive else 100) if not opts.quick else 100,
        "max_seconds": opts.seconds(20.0, 5.0),
        "latency": True,
    }


def _connection_notes(name: str, conc: int, results: list[Result], keepalive: bool) -> list[str]:
    """Keep-alive must reuse (≤ c connections), no keep-alive must open one per request."""
    notes = []
    for i, r in enumerate(results, 1):
        opened, warm = r["warmup_connections"], r["total_requests"] - r["requests"]
        if (keepalive and opened > conc) or (not keepalive and opened < warm):
            notes.append(
                f"{name} c={conc}, round {i}: the warm-up used {opened} connections for {warm} "
                "requests, not what the variant's keep-alive setting should give"
            )
    return notes


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Consul Connect mTLS: client CPU per request, latency, cost of a new connection",
        "One plain and one mTLS nginx (1 worker each, keep-alive), found through FakeConsul; "
        "client user+system CPU per request and per-request wall time, closed loop.",
    )
    plan = [(n, 1) for n in _VARIANTS] + [(n, 32) for n in _KEPT_ALIVE]
    with servers() as (consul, plain, tls, tmp):
        where = {
            "plain_url": plain.url,
            "tls_url": tls.url,
            "consul_port": consul.port,
            "certs": tmp,
        }
        variants = [Variant(f"{n}@{c}", _spec(n, c, opts, where)) for n, c in plan]
        paired = {
            "kind": "connect-paired",
            **where,
            "warmup": opts.scale(300, 100),
            "batch": opts.scale(300, 200),
            "pairs": opts.scale(31, 9),
        }
        variants.append(Variant("paired", paired))
        data = interleave(NAME, variants, opts.rounds, opts.verbose)
    for n, c in plan:
        label, _, keepalive = _VARIANTS[n]
        res.notes.extend(check_clean(f"{label} c={c}", data[f"{n}@{c}"]))
        res.notes.extend(_connection_notes(label, c, data[f"{n}@{c}"], keepalive))
    for conc in (1, 32):
        names = [n for n, c in plan if c == conc]
        cpu = {
            n: res.add(
                Row(
                    _VARIANTS[n][0],
                    f"CPU µs/request, c={conc}",
                    column(data[f"{n}@{conc}"], "cpu_us_per_request"),
                )
            )
            for n in names
        }
        res.ratio_to(cpu["httpx"], *(cpu[n] for n in names if n != "httpx"))
        if conc == 1:
            ratio_target(cpu["mesh-connect"], TARGET_VS_HTTPX)
        pairs = [
            d / p for d, p in zip(cpu["mesh-connect"].rounds, cpu["mesh"].rounds, strict=True) if p
        ]
        vs_plain = res.add(
            Row("(d) ÷ (c), same round", f"CPU ratio, c={conc}", pairs, fmt="{:.3f}")
        )
        at_most(vs_plain, TARGET_VS_PLAIN, "x")
    res.notes.extend(check_clean("paired (c) / (d)", data["paired"]))
    res.add(
        Row(
            "(c) meshlib plaintext, paired",
            "CPU µs/request, one process",
            column(data["paired"], "plain_us"),
        )
    )
    res.add(
        Row(
            "(d) meshlib Connect mTLS, paired",
            "CPU µs/request, one process",
            column(data["paired"], "connect_us"),
        )
    )
    res.add(
        Row(
            "(d) - (c), paired batches",
            "CPU µs/request, one process",
            column(data["paired"], "diff_us"),
        )
    )
    at_most(
        res.add(
            Row(
                "(d) ÷ (c), paired batches",
                "CPU ratio, c=1, one process",
                column(data["paired"], "ratio"),
                fmt="{:.3f}",
            )
        ),
        TARGET_VS_PLAIN,
        "x",
    )
    for metric, key in (("p50 ms, c=1", "p50_ms"), ("p99 ms, c=1", "p99_ms")):
        lat = {
            n: res.add(Row(_VARIANTS[n][0], metric, column(data[f"{n}@1"], key), fmt="{:.3f}"))
            for n in _VARIANTS
        }
        res.ratio_to(lat["httpx"], *(lat[n] for n in _VARIANTS if n != "httpx"))
    new_rows = {
        n: Row(_VARIANTS[n][0], "", column(data[f"{n}@1"], "cpu_us_per_request"))
        for n in ("mesh-connect-new", "mesh-new", "httpx-tls-new", "httpx-new")
    }
    paired_difference(
        res,
        "meshlib: (e) - (f), same round",
        new_rows["mesh-connect-new"],
        new_rows["mesh-new"],
        "CPU µs per new mTLS connection",
    )
    paired_difference(
        res,
        "httpx: mTLS - plain, no keep-alive, same round",
        new_rows["httpx-tls-new"],
        new_rows["httpx-new"],
        "CPU µs per new mTLS connection",
    )
    res.notes.append(
        "Paired rows: the (c) and (d) clients in one worker process, kept alive, alternating "
        "batches of requests; each round's value is the median over its pairs. Two batches a few "
        "milliseconds apart see the same machine, so these are the precise (d) vs (c) figures; "
        "the fresh-process rows carry the round-to-round drift of a shared machine."
    )
    res.notes.append(
        "No keep-alive rows: every request opens (and closes) its own connection, so their CPU "
        "per request includes one connection set-up and their p50 is the latency of a request "
        "that opens one. Keep-alive rows use max_keepalive_connections=100 for every variant "
        "(one origin; at c=32 httpx's default 20 would reopen connections in the loop)."
    )
    return res
