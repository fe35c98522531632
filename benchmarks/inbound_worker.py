"""The ``inbound-limit`` measurement: an open-loop client against the inbound middleware's server.

One worker process per variant and round starts ``benchmarks.inbound_server`` on a free
127.0.0.1 port (stopped by its pid when the round ends), sends to it at a fixed rate whatever the
answers are, and reports:

* the rate at which the application answered (200s per second of the measured window: what the
  bucket let through), after a warm-up at the same rate that drains the bucket's burst, so the
  window measures the steady state;
* the latency of refused (429) and admitted (200) requests, each from the moment the request was
  sent to the moment its response arrived, p50 and p99 by nearest rank; and the same for 429s
  from the moment the request was *due*, so a client that fell behind is not hidden.

The client is a minimal keep-alive HTTP/1.1 client on plain asyncio connections (``_RawClient``:
no retry, no Retry-After wait, so the refusals are what is measured, and little CPU of its own
to take from the server on a small machine). Requests in flight are capped, and the loop is
bounded by its request count.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from benchmarks.model import nearest_rank
from benchmarks.servers import free_port

__all__ = ["inbound_limit", "inbound_refusal_cost"]

Spec = dict[str, Any]
_MAX_IN_FLIGHT = 256


class _Window:
    """What one open-loop run saw."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.sent_latency: dict[int, list[float]] = {}
        self.due_latency: dict[int, list[float]] = {}
        self.dropped = 0


class _RawClient:
    """Keep-alive HTTP/1.1 GETs on a pool of plain asyncio connections to one 127.0.0.1 port.

    Why not httpx here: at 1,000 req/s on a shared two-core machine the client's own CPU
    competes with the server it measures; this costs a fraction of a full client per request
    and has nothing to retry or wait for, so every answer is seen as the server sent it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def get(self) -> int:
        if self._idle:
            try:
                return await self._exchange(*self._idle.pop())
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the server closed an idle kept-alive connection: one fresh try, as httpx
        return await self._exchange(*await asyncio.open_connection("127.0.0.1", self._port))

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at < 0:
                raise ValueError("response without content-length")
            length = int(lower[at + 15 : lower.index(b"\r\n", at)])
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _run(client: _RawClient, rate: float, duration: float) -> _Window:
    w = _Window()
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        sent = time.perf_counter()
        try:
            status = await client.get()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            w.errors[type(exc).__name__] += 1
            return
        done = time.perf_counter()
        w.statuses[status] += 1
        w.sent_latency.setdefault(status, []).append(done - sent)
        w.due_latency.setdefault(status, []).append(done - due)

    start = time.perf_counter()
    for i in range(int(rate * duration)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= _MAX_IN_FLIGHT:
            w.dropped += 1
            continue
        t = asyncio.create_task(one(due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=15.0)
    return w


def _ms(values: list[float] | None, q: float) -> float:
    return nearest_rank(sorted(values), q) * 1e3 if values else float("nan")


async def _measure(spec: Spec, port: int) -> Spec:
    client = _RawClient(port)
    rate, duration = float(spec["rate"]), float(spec["duration"])
    try:
        await _run(client, rate, float(spec["warmup_seconds"]))
        w = await _run(client, rate, duration)
    finally:
        client.close()
    return {
        "offered_per_s": sum(w.statuses.values()) / duration,
        "app_per_s": w.statuses[200] / duration,
        "refused_per_s": w.statuses[429] / duration,
        "refused_p50_ms": _ms(w.sent_latency.get(429), 50),
        "refused_p99_ms": _ms(w.sent_latency.get(429), 99),
        "refused_due_p99_ms": _ms(w.due_latency.get(429), 99),
        "admitted_p50_ms": _ms(w.sent_latency.get(200), 50),
        "admitted_p99_ms": _ms(w.sent_latency.get(200), 99),
        "statuses": {str(k): v for k, v in w.statuses.items()},
        "errors": {**dict(w.errors), **({"dropped": w.dropped} if w.dropped else {})},
        "loadavg_1m": os.getloadavg()[0],
    }


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    import socket

    for _ in range(200):  # at most 10 s
        if proc.poll() is not None:
            raise RuntimeError(f"inbound server exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"inbound server did not listen on 127.0.0.1:{port} within 10 s")


def inbound_limit(spec: Spec) -> Spec:
    """Start the server for ``spec["server"]``, drive it open-loop, stop it by its pid."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.inbound_server", "--kind", spec["server"]]
    argv += ["--port", str(port)]
    if spec.get("limit") is not None:
        argv += ["--rate", str(spec["limit"])]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port)
        return asyncio.run(_measure(spec, port))
    finally:
        proc.terminate()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)


def inbound_refusal_cost(spec: Spec) -> Spec:
    """In-process CPU of one refusal by each middleware (µs): a bucket that is always empty,
    called directly with a minimal request, so the figure is the middleware's alone."""
    import resource

    import meshlib

    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("asgi")

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        calls.append("wsgi")
        return []

    policy = meshlib.AdmissionPolicy(rate=1e-6, burst=1)
    asgi = meshlib.MeshASGIMiddleware(app, admission=policy)
    wsgi = meshlib.MeshWSGIMiddleware(wsgi_app, admission=policy)
    scope = {"type": "http", "path": "/", "headers": [(b"host", b"svc"), (b"accept", b"*/*")]}
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_HOST": "svc", "HTTP_ACCEPT": "*/*"}
    n = int(spec["calls"])

    async def send(message: Any) -> None:
        return None

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def asgi_loop() -> float:
        await asgi(scope, None, send)  # spends the one token
        c0 = cpu()
        for _ in range(n):
            await asgi(scope, None, send)
        return (cpu() - c0) / n * 1e6

    asgi_us = asyncio.run(asgi_loop())
    list(wsgi(environ, lambda status, headers: None))
    c0 = cpu()
    for _ in range(n):
        list(wsgi(environ, lambda status, headers: None))
    wsgi_us = (cpu() - c0) / n * 1e6
    if calls != ["asgi", "wsgi"]:  # only the two requests that spent the one token
        raise AssertionError(f"refused requests reached the application: {len(calls)} calls")
    return {"asgi_us": asgi_us, "wsgi_us": wsgi_us, "errors": {}}
