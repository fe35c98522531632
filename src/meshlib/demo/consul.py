"""``python -m meshlib demo --consul``: the mesh following a Consul registry through changes.

Everything runs on 127.0.0.1 with nothing to install: an embedded FakeConsul agent (started as
its own process, ``python -m meshlib.testing.fake_consul``, and stopped by its pid), the three
demo upstreams announced through meshlib's own self-registration (TTL checks kept green by
heartbeats), and an ``AsyncMeshClient`` configured exactly as a user's would be, from
``CONSUL_HTTP_ADDR``. During the run one instance is deregistered, another is put into
maintenance and back, and Consul itself is frozen for a few seconds; once a second the demo
prints what callers saw and what the mesh's view of the registry was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import httpx

from meshlib.client import AsyncMeshClient
from meshlib.config import MeshConfig
from meshlib.consul.http import async_consul
from meshlib.consul.service import ServiceRegistration
from meshlib.consul.settings import ConsulSettings
from meshlib.demo.loadgen import LoadResult, run_open_loop
from meshlib.demo.view import View
from meshlib.registration import AsyncRegistrar
from meshlib.upstream import SpawnedUpstream

__all__ = ["run_consul_act"]

_SCRIPT = {
    2: "beta deregisters (its registrar exits)",
    4: "gamma enters maintenance",
    6: "gamma leaves maintenance",
    7: "Consul freezes (SIGSTOP): no answers",
    12: "Consul thaws (SIGCONT)",
}


def _start_consul() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.testing.fake_consul", "--port", "0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "CONSUL_HTTP_ADDR=" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"FakeConsul did not start: {line!r}")
    return proc, line.split("CONSUL_HTTP_ADDR=", 1)[1].rstrip(")\n ")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


async def run_consul_act(
    upstreams: Sequence[SpawnedUpstream],
    names: Sequence[str],
    view: View,
    *,
    rate: float,
    duration: float = 15.0,
) -> LoadResult:
    """Drive traffic through Consul discovery while the registry changes under it."""
    proc, addr = _start_consul()
    host, _, port = addr.rpartition(":")
    settings = ConsulSettings(host=host, port=int(port))
    regs = [
        ServiceRegistration(name="demo", id=n, address="127.0.0.1", port=u.port, ttl=3.0)
        for n, u in zip(names, upstreams, strict=True)
    ]
    registrars = [AsyncRegistrar(r, settings) for r in regs]
    agent = async_consul(settings, timeout=5.0)
    result = LoadResult()
    table = view.table(
        f"Consul: FakeConsul at {addr}; alpha, beta and gamma register themselves "
        "(TTL checks, heartbeats)",
        ["t", "sent", "errors", *names, "mesh view", "event"],
        timeline=True,
    )
    rows: list[list[str]] = []
    try:
        for r in registrars:
            await r.__aenter__()
        config = MeshConfig.from_env(
            {"CONSUL_HTTP_ADDR": addr, "MESH_CONSUL_WAIT": "2s", "MESH_DISCOVERY_TIMEOUT": "5s"}
        )
        async with AsyncMeshClient(config=config, timeout=2.0) as client:

            async def send() -> httpx.Response:
                return await client.get("http://demo/")

            loop = asyncio.get_running_loop()
            traffic = asyncio.ensure_future(
                run_open_loop(send, rate=rate, duration=duration, result=result)
            )
            start = loop.time()
            prev_sent = prev_err = 0
            prev: Counter[str] = Counter()
            for second in range(1, int(duration) + 1):
                await asyncio.sleep(max(0.0, start + second - loop.time()))
                event = _SCRIPT.get(second, "")
                if second == 2:
                    await registrars[1].__aexit__(None, None, None)
                elif second == 4:
                    await agent.agent.service.maintenance("gamma", "true", "demo")
                elif second == 6:
                    await agent.agent.service.maintenance("gamma", "false")
                elif second == 7:
                    os.kill(proc.pid, signal.SIGSTOP)
                elif second == 12:
                    os.kill(proc.pid, signal.SIGCONT)
                svc = client.mesh_state()["services"].get("demo", {})
                mesh_view = f"{len(svc.get('endpoints', ()))} endpoint(s)" + (
                    " STALE" if svc.get("stale") else ""
                )
                served = Counter(result.served_by)
                rows.append(
                    [
                        f"{second}s",
                        str(result.sent - prev_sent),
                        str(result.error_count - prev_err),
                        *(str(served[n] - prev[n]) for n in names),
                        mesh_view,
                        event,
                    ]
                )
                table.update(rows)
                prev_sent, prev_err, prev = result.sent, result.error_count, served
            await traffic
    finally:
        table.close()
        os.kill(proc.pid, signal.SIGCONT)
        for i, r in enumerate(registrars):
            if i != 1 and r.registered:
                await r.__aexit__(None, None, None)
        await agent.http.close()
        await asyncio.to_thread(_stop, proc)
    view.note(
        f"caller-visible errors: {result.error_count} of {result.sent} while the registry "
        "changed and Consul froze."
    )
    return result
