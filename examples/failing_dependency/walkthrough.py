"""What meshlib does when a dependency misbehaves, step by step (``python walkthrough.py``).

Six short scenes, each against real HTTP servers on 127.0.0.1 (``meshlib.testing.Upstream``,
plus a ``FaultProxy`` for the reset), each printing what the caller saw, what the upstreams
received and the relevant part of ``client.mesh_state()``:

1. a replica that fails: failure accrual ejects it, lets one probe through after a backoff, and
   revives it when the probe succeeds (backoffs shortened to under a second);
2. a replica that hangs: the per-try timeout gives up on it and the GET is retried elsewhere; a
   POST is not retried, since the server may have acted on it;
3. a connection reset in the middle of a response body: the GET is retried, the POST is not;
4. ``503`` with ``Retry-After``: the retry waits as long as the server asked, unless that is
   beyond the caller's deadline;
5. every replica failing: the retry budget caps the extra load retries add;
6. ``@meshlib.outbound(timeout=...)``: one budget for a whole function, sent downstream as
   ``x-mesh-deadline-ms``, raising ``meshlib.DeadlineExceeded`` when it runs out.

It is a script to read alongside its output; it finishes in a few seconds. The mesh is
configured in code (``meshlib.MeshConfig``); every setting used here also has a ``MESH_*``
variable (docs/configuration.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

import meshlib
from meshlib.testing import FaultProxy, Upstream, UpstreamBehaviour, reset_after_bytes

SERVICE = "catalog"


@dataclass
class Findings:
    """What each scene observed, so a test can check the walkthrough tells the truth."""

    accrual: dict[str, Any] = field(default_factory=dict)
    hang: dict[str, Any] = field(default_factory=dict)
    reset: dict[str, Any] = field(default_factory=dict)
    retry_after: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    deadline: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def upstreams(*behaviours: UpstreamBehaviour) -> AsyncIterator[list[Upstream]]:
    """Start one in-process HTTP server per behaviour; stop them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Upstream(b)) for b in behaviours]


def mesh_client(addrs: Sequence[str], config: meshlib.MeshConfig) -> meshlib.AsyncMeshClient:
    """A client for ``http://catalog/`` over a fixed list of endpoints (seeded jitter)."""
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({SERVICE: list(addrs)}),
        config=config,
        rng=random.Random(7),
        timeout=5.0,
    )


def show_state(
    client: meshlib.AsyncMeshClient, names: dict[str, str], out: TextIO, indent: str = "    "
) -> dict[str, dict[str, Any]]:
    """Print the highlights of ``client.mesh_state()``; return its endpoints by name."""
    svc = client.mesh_state()["services"][SERVICE]
    by_name: dict[str, dict[str, Any]] = {}
    out.write(f"{indent}mesh_state(): {svc['dead']} dead, panic={svc['panic']}")
    budget = svc.get("budget")
    if budget:
        out.write(
            f", retry budget balance={budget['balance']:g} "
            f"(retries in window {budget['retries_in_window']}, refused {budget['exhausted']})"
        )
    out.write("\n")
    for ep in svc["endpoints"]:
        name = names.get(ep["address"], ep["address"])
        by_name[name] = ep
        probe = f", next probe in {ep['next_probe_in_s']:.2f} s" if ep["state"] == "dead" else ""
        out.write(
            f"{indent}  {name:<6} {ep['state']:<7} attempts={ep['requests']:<3} "
            f"failures={ep['failures']:<3} success_rate={ep['success_rate']:.2f}{probe}\n"
        )
    return by_name


class _PrintEvents(logging.Handler):
    """Prints meshlib's accrual events (one line per state change) as they happen."""

    def __init__(self, out: TextIO, names: dict[str, str]) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.names = names
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for addr, name in self.names.items():
            message = message.replace(addr, f"{name} ({addr})")
        self.events.append(message)
        self.out.write(f"    [log meshlib.accrual] {message}\n")


@contextlib.contextmanager
def accrual_events(out: TextIO, names: dict[str, str]) -> Iterator[_PrintEvents]:
    logger = logging.getLogger("meshlib.accrual")
    handler = _PrintEvents(out, names)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def heading(out: TextIO, text: str) -> None:
    out.write(f"\n=== {text}\n")


async def scene_failing_replica(out: TextIO) -> dict[str, Any]:
    heading(out, "1. A replica that fails: ejected, probed once, revived")
    healthy = UpstreamBehaviour(name="b")
    async with upstreams(
        UpstreamBehaviour(name="a"),
        UpstreamBehaviour(name="b", fail_fraction=1.0),
        UpstreamBehaviour(name="c"),
    ) as (a, b, c):
        names = {f"127.0.0.1:{u.port}": n for u, n in ((a, "a"), (b, "b"), (c, "c"))}
        # Round robin keeps offering b its turn, so only failure accrual keeps callers off it
        # (the default P2C would also steer away from it through its failure score).
        config = meshlib.MeshConfig(
            balancer="round-robin",
            accrual=meshlib.AccrualPolicy(backoff_min=0.6, backoff_max=1.2),
        )
        out.write(
            "Three replicas a, b, c; b answers 503 to everything. Round robin, 3 attempts per\n"
            "call, accrual: dead after 5 consecutive failures, backoff 0.6 s doubling to 1.2 s.\n"
        )
        async with contextlib.AsyncExitStack() as stack:
            ev = stack.enter_context(accrual_events(out, names))
            client = await stack.enter_async_context(mesh_client(list(names), config))
            errors = 0
            for _ in range(15):
                r = await client.get(f"http://{SERVICE}/")
                errors += r.status_code != 200
            out.write(
                f"  15 calls: {errors} errors seen by the caller (each 503 from b was retried on\n"
                f"  a or c); b received {b.stats().total} requests.\n"
            )
            state = show_state(client, names, out)
            dead_after_failures = state["b"]["state"]

            before = b.stats().total
            for _ in range(15):
                await client.get(f"http://{SERVICE}/")
            while_dead = b.stats().total - before
            out.write(
                f"  15 more calls while b is dead: b received {while_dead} (an open breaker "
                "costs no attempt).\n"
            )

            out.write("  Waiting for b's backoff; b is still failing, so its probe fails:\n")
            await asyncio.sleep(state["b"]["next_probe_in_s"] + 0.02)
            for _ in range(3):
                await client.get(f"http://{SERVICE}/")
            state = show_state(client, names, out)
            backoff_after_failed_probe = state["b"]["next_probe_in_s"]

            b.set_behaviour(healthy)
            out.write(
                "  b recovers. After the (longer) backoff one probe goes to b and succeeds:\n"
            )
            await asyncio.sleep(backoff_after_failed_probe + 0.02)
            before = b.stats().total
            for _ in range(6):
                await client.get(f"http://{SERVICE}/")
            state = show_state(client, names, out)
            out.write(
                f"  b received {b.stats().total - before} of the next 6 calls: the probe, then\n"
                "  its round-robin share again.\n"
            )
            return {
                "caller_errors": errors,
                "dead_after_failures": dead_after_failures,
                "requests_while_dead": while_dead,
                "final_state": state["b"]["state"],
                "events": list(ev.events),
            }


async def scene_hang(out: TextIO) -> dict[str, Any]:
    heading(out, "2. A replica that hangs: per-try timeout, retry on another endpoint")
    async with upstreams(
        UpstreamBehaviour(name="hung", hang=True), UpstreamBehaviour(name="ok")
    ) as (hung, ok):
        names = {f"127.0.0.1:{hung.port}": "hung", f"127.0.0.1:{ok.port}": "ok"}
        config = meshlib.MeshConfig(balancer="round-robin", per_try_timeout=0.25)
        out.write(
            "Replica 'hung' reads requests and never answers; per_try_timeout=0.25 s\n"
            "(MESH_PER_TRY_TIMEOUT) caps each attempt, the call itself may take up to 5 s.\n"
        )
        served: list[str] = []
        slowest = 0.0
        async with mesh_client(list(names), config) as client:
            for i in range(2):
                start = time.monotonic()
                r = await client.get(f"http://{SERVICE}/")
                took = time.monotonic() - start
                slowest = max(slowest, took)
                served.append(r.headers["x-upstream"])
                out.write(f"  GET #{i + 1}: {r.status_code} from {served[-1]} in {took:.2f} s\n")
            out.write(
                f"  'hung' received {hung.stats().total} GET(s); each timed out after 0.25 s and\n"
                "  the call was retried on 'ok'.\n"
            )
            show_state(client, names, out)

        hung.reset_stats()
        single = meshlib.MeshConfig(per_try_timeout=0.25)
        post_error = ""
        async with mesh_client([f"127.0.0.1:{hung.port}"], single) as client:
            start = time.monotonic()
            try:
                await client.post(f"http://{SERVICE}/orders", content=b'{"qty": 1}')
            except httpx.TimeoutException as exc:
                post_error = type(exc).__name__
                out.write(
                    f"  POST to 'hung': {post_error} after {time.monotonic() - start:.2f} s, "
                    f"sent {hung.stats().total} time(s): the server may have acted on it, so\n"
                    "  it is not retried (mark it idempotent, or use idempotency keys, to allow "
                    "it).\n"
                )
        return {
            "served": served,
            "slowest_get_s": slowest,
            "post_error": post_error,
            "post_sent": hung.stats().total,
        }


async def scene_reset(out: TextIO) -> dict[str, Any]:
    heading(out, "3. A reset in the middle of a response: GET retried, POST not")
    big = UpstreamBehaviour(name="big", body=b"x" * 200_000)
    async with upstreams(big, UpstreamBehaviour(name="ok")) as (up, ok):
        async with FaultProxy(("127.0.0.1", up.port)) as proxy:
            proxy.add(reset_after_bytes(1000))  # headers arrive, then the connection is reset
            names = {proxy.addr: "big", f"127.0.0.1:{ok.port}": "ok"}
            out.write(
                "Replica 'big' sits behind a FaultProxy that resets each connection after 1000\n"
                "bytes of its 200 kB response: the headers arrive, the body does not.\n"
            )
            config = meshlib.MeshConfig(balancer="round-robin")
            async with mesh_client(list(names), config) as client:
                gets = [await client.get(f"http://{SERVICE}/") for _ in range(2)]
                reset_gets = up.stats().total
                out.write(
                    "  2 GETs: "
                    + ", ".join(f"{r.status_code} from {r.headers['x-upstream']}" for r in gets)
                    + f"; 'big' was reached {reset_gets} time(s) and reset, the GET retried.\n"
                )
                up.reset_stats()
                post_errors: list[str] = []
                posts_ok = 0
                for i in range(2):
                    try:
                        r = await client.post(f"http://{SERVICE}/orders", content=b"pay 10 EUR")
                        posts_ok += 1
                        out.write(
                            f"  POST #{i + 1}: {r.status_code} from {r.headers['x-upstream']}\n"
                        )
                    except httpx.TransportError as exc:
                        post_errors.append(type(exc).__name__)
                        out.write(
                            f"  POST #{i + 1}: {type(exc).__name__} ({exc}) raised to the caller, "
                            "not retried\n"
                        )
                out.write(
                    f"  'big' received {up.stats().total} POST(s), each exactly once: a payment "
                    "is never sent twice.\n"
                )
                show_state(client, names, out)
        return {
            "get_statuses": [r.status_code for r in gets],
            "get_served_by": [r.headers["x-upstream"] for r in gets],
            "get_attempts_reset": reset_gets,
            "post_errors": post_errors,
            "posts_ok": posts_ok,
            "posts_received_by_big": up.stats().total,
        }


async def scene_retry_after(out: TextIO) -> dict[str, Any]:
    heading(out, "4. 503 with Retry-After: wait as asked, but never past the deadline")
    busy = UpstreamBehaviour(name="busy", fail_fraction=1.0, retry_after="1")
    async with upstreams(busy) as (up,):
        names = {f"127.0.0.1:{up.port}": "busy"}
        out.write(
            "One replica answers '503, Retry-After: 1'. It recovers 0.3 s after the call starts.\n"
        )
        async with mesh_client(list(names), meshlib.MeshConfig()) as client:
            start = time.monotonic()
            call = asyncio.create_task(client.get(f"http://{SERVICE}/"))
            await asyncio.sleep(0.3)
            up.set_behaviour(UpstreamBehaviour(name="busy"))
            r = await call
            waited = time.monotonic() - start
            attempts = up.stats().total
            status = r.status_code
            out.write(
                f"  GET: {r.status_code} after {waited:.2f} s and {attempts} attempts: the retry\n"
                "  waited the 1 s the server asked for, not the usual 0-25 ms backoff.\n"
            )
            up.set_behaviour(busy)
            up.reset_stats()
            start = time.monotonic()
            r = await client.get(f"http://{SERVICE}/", extensions={"mesh": {"timeout": 0.5}})
            capped = time.monotonic() - start
            capped_status = r.status_code
            out.write(
                f"  Same 503 for a call with a 0.5 s deadline: {r.status_code} returned after "
                f"{capped:.2f} s,\n  {up.stats().total} attempt: waiting 1 s could not fit, so "
                "the caller gets the 503 at once.\n"
            )
            show_state(client, names, out)
        return {
            "status": status,
            "waited_s": waited,
            "attempts": attempts,
            "capped_status": capped_status,
            "capped_s": capped,
            "capped_attempts": up.stats().total,
        }


async def scene_budget(out: TextIO) -> dict[str, Any]:
    heading(out, "5. Every replica failing: the retry budget caps the retry storm")
    async with upstreams(
        UpstreamBehaviour(name="a", fail_fraction=1.0),
        UpstreamBehaviour(name="b", fail_fraction=1.0),
    ) as (a, b):
        names = {f"127.0.0.1:{a.port}": "a", f"127.0.0.1:{b.port}": "b"}
        budget = meshlib.BudgetPolicy(percent=0.2, min_per_sec=0.5, ttl=10)
        config = meshlib.MeshConfig(budget=budget, accrual=meshlib.AccrualPolicy(enabled=False))
        calls = 40
        out.write(
            f"Both replicas answer 503. {calls} calls, 3 attempts each allowed: without a budget\n"
            f"that is {3 * calls} requests. Budget: 20% of calls + 0.5 retries/s over 10 s\n"
            "(a floor of 5); accrual is off here so that only the budget acts.\n"
        )
        async with mesh_client(list(names), config) as client:
            statuses = [(await client.get(f"http://{SERVICE}/")).status_code for _ in range(calls)]
            sent = a.stats().total + b.stats().total
            out.write(
                f"  callers got {statuses.count(503)} x 503 (the last real response, never a "
                f"wrapper);\n  the replicas received {sent} requests: {sent - calls} retries, not "
                f"{2 * calls}.\n"
            )
            snapshot = client.mesh_state()["services"][SERVICE]["budget"]
            show_state(client, names, out)
        return {"calls": calls, "sent": sent, "budget": snapshot}


async def scene_deadline(out: TextIO) -> dict[str, Any]:
    heading(out, "6. @meshlib.outbound(timeout=...): one deadline for a whole function")
    async with upstreams(UpstreamBehaviour(name="slow", latency=0.3)) as (slow,):
        out.write(
            "Replica 'slow' takes 0.3 s per request. load_page() makes two calls under\n"
            "@meshlib.outbound(timeout=0.5): 0.5 s in all, shared by both calls and any retries.\n"
        )
        async with mesh_client([f"127.0.0.1:{slow.port}"], meshlib.MeshConfig()) as client:
            seen: list[str] = []

            @meshlib.outbound(timeout=0.5)
            async def load_page() -> None:
                for _ in range(2):
                    r = await client.get(f"http://{SERVICE}/echo")
                    seen.append(r.json()["headers"][meshlib.DEADLINE_HEADER])

            start = time.monotonic()
            error: BaseException | None = None
            try:
                await load_page()
            except meshlib.DeadlineExceeded as exc:
                error = exc
            took = time.monotonic() - start
            out.write(
                f"  call 1 reached 'slow' with {meshlib.DEADLINE_HEADER}: {seen[0]} (what was left "
                "of the\n  0.5 s, so 'slow' could give up early too);\n"
            )
            if error is not None:
                out.write(
                    f"  call 2 raised {type(error).__name__} after {took:.2f} s in all:\n"
                    f"    {error}\n    cause: {type(error.__cause__).__name__}\n"
                )
        return {
            "first_deadline_ms": int(seen[0]) if seen else None,
            "completed_calls": len(seen),
            "error": type(error).__name__ if error else None,
            "took_s": took,
        }


async def walkthrough(out: TextIO) -> Findings:
    """Run the six scenes in order, printing to ``out``."""
    findings = Findings()
    findings.accrual = await scene_failing_replica(out)
    findings.hang = await scene_hang(out)
    findings.reset = await scene_reset(out)
    findings.retry_after = await scene_retry_after(out)
    findings.budget = await scene_budget(out)
    findings.deadline = await scene_deadline(out)
    return findings


def main() -> Findings:
    start = time.monotonic()
    findings = asyncio.run(walkthrough(sys.stdout))
    print(f"\nDone in {time.monotonic() - start:.1f} s.")
    return findings


if __name__ == "__main__":
    main()
