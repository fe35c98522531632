"""Client CPU per request: stock httpx vs httpx on meshlib's engine vs the bare engine.

Why CPU time and not latency: the mesh runs inside every service, so what it costs is
the client's own CPU per request (``time.process_time`` deltas, all threads of this
process), independent of how fast the upstream is. The upstream is nginx in a separate
process (started here with a throw-away config on a free 127.0.0.1 port, stopped by its
pid), so its CPU is not counted.

Run: ``.venv/bin/python benchmarks/engine_micro.py [requests_per_round]``
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from meshlib.engine import AsyncEngine, SyncEngine

__all__ = ["main"]

ROUNDS = 3  # report the best round: CPU time on a shared VM only ever gets inflated

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "hello from nginx\\n"; }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_nginx(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(d=tmp, port=port))
    proc = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", tmp])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/"


async def _arun(call: Callable[[], Awaitable[None]], n: int, conc: int) -> float:
    async def worker(k: int) -> None:
        for _ in range(k):
            await call()

    await asyncio.gather(*(worker(max(1, n // 10 // conc)) for _ in range(conc)))  # warm up
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.process_time()
        await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
        best = min(best, (time.process_time() - t0) / (n // conc * conc) * 1e6)
    return best


def _srun(call: Callable[[], object], n: int, conc: int) -> float:
    def worker(k: int) -> None:
        for _ in range(k):
            call()

    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(worker, [max(1, n // 10 // conc)] * conc))  # warm up
        best = float("inf")
        for _ in range(ROUNDS):
            t0 = time.process_time()
            list(pool.map(worker, [n // conc] * conc))
            best = min(best, (time.process_time() - t0) / (n // conc * conc) * 1e6)
        return best


TIMEOUT = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


class _RawClient(asyncio.Protocol):
    """Reference point: the least a keep-alive asyncio client can do (no httpx at all)."""

    def __init__(self) -> None:
        self.buf = b""
        self.done: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.done is None:
            return
        start = self.buf.lower().find(b"content-length:") + 15
        length = int(self.buf[start : self.buf.find(b"\r\n", start)])
        if len(self.buf) >= end + 4 + length:
            self.buf = b""
            self.done.set_result(None)


async def _raw_case(url: str, n: int, conc: int) -> float:
    loop = asyncio.get_running_loop()
    u = httpx.URL(url)
    request = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % u.netloc
    conns = [await loop.create_connection(_RawClient, u.host, u.port or 80) for _ in range(conc)]
    free = list(conns)

    async def call() -> None:
        transport, proto = free.pop()
        proto.done = loop.create_future()
        transport.write(request)
        await proto.done
        free.append((transport, proto))

    try:
        return await _arun(call, n, conc)
    finally:
        for transport, _ in conns:
            transport.close()


async def _async_case(kind: str, url: str, n: int, conc: int) -> float:
    if kind == "raw":
        return await _raw_case(url, n, conc)
    if kind in ("bare", "engine-only"):
        engine = AsyncEngine()
        request_url = httpx.URL(url)
        reused = httpx.Request("GET", request_url, extensions={"timeout": TIMEOUT})

        async def bare() -> None:
            request = httpx.Request("GET", request_url, extensions={"timeout": TIMEOUT})
            response = await engine.handle_async_request(request)
            await response.aread()
            await response.aclose()

        async def engine_only() -> None:  # no Request() to build, no httpx body decoding
            response = await engine.handle_async_request(reused)
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            async for _ in stream:
                pass
            await stream.aclose()

        try:
            return await _arun(bare if kind == "bare" else engine_only, n, conc)
        finally:
            await engine.aclose()
    transport = AsyncEngine() if kind == "engine" else None
    async with httpx.AsyncClient(transport=transport) as client:

        async def get() -> None:
            (await client.get(url)).raise_for_status()

        return await _arun(get, n, conc)


def async_cases(url: str, n: int, conc: int) -> dict[str, float]:
    """Each case on a fresh event loop after a full GC, so no case inherits another's heap."""
    names = {
        "raw": "raw asyncio.Protocol client (reference)",
        "stock": "httpx.AsyncClient() stock",
        "engine": "httpx.AsyncClient(transport=AsyncEngine())",
        "bare": "AsyncEngine.handle_async_request (bare)",
        "engine-only": "  same, prebuilt Request, raw stream drained",
    }
    out: dict[str, float] = {}
    for kind, name in names.items():
        gc.collect()
        out[name] = asyncio.run(_async_case(kind, url, n, conc))
    return out


def sync_cases(url: str, n: int, conc: int) -> dict[str, float]:
    out: dict[str, float] = {}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=conc)
    gc.collect()
    with httpx.Client(limits=limits) as stock:
        out["httpx.Client() stock"] = _srun(lambda: stock.get(url).raise_for_status(), n, conc)
    gc.collect()
    with httpx.Client(transport=SyncEngine(limits=limits)) as client:
        out["httpx.Client(transport=SyncEngine())"] = _srun(
            lambda: client.get(url).raise_for_status(), n, conc
        )
    gc.collect()
    engine = SyncEngine(limits=limits)
    request_url = httpx.URL(url)

    def bare() -> None:
        request = httpx.Request("GET", request_url, extensions={"timeout": TIMEOUT})
        response = engine.handle_request(request)
        response.read()
        response.close()

    out["SyncEngine.handle_request (bare)"] = _srun(bare, n, conc)
    reused = httpx.Request("GET", request_url, extensions={"timeout": TIMEOUT})

    def engine_only() -> None:
        stream = engine.handle_request(reused).stream
        assert isinstance(stream, httpx.SyncByteStream)
        for _ in stream:
            pass
        stream.close()

    gc.collect()
    out["  same, prebuilt Request, raw stream drained"] = _srun(engine_only, n, conc)
    engine.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    tmp = tempfile.mkdtemp(prefix="meshlib-nginx-")
    proc, url = start_nginx(tmp)
    try:
        for conc in (1, 32):
            for name, us in async_cases(url, n, conc).items():
                print(f"async c={conc:<3} {name:<46} {us:8.1f} µs CPU/request")
        for conc in (1, 32):
            for name, us in sync_cases(url, n, conc).items():
                print(f"sync  c={conc:<3} {name:<46} {us:8.1f} µs CPU/request")
    finally:
        os.kill(proc.pid, signal.SIGQUIT)
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
