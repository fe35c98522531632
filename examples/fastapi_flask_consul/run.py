"""Run frontend + two catalog instances + a fake Consul on 127.0.0.1 (``python run.py``).

What happens, in order:

1. a FakeConsul agent starts as its own process (``python -m meshlib.testing.fake_consul
   --port 0``), standing in for the local Consul agent; ``--consul HOST:PORT`` uses a real
   agent instead;
2. two catalog instances (Flask under werkzeug) start on free ports and register themselves
   with ``meshlib.Registrar`` (TTL check kept green by a heartbeat thread);
3. the frontend (FastAPI under uvicorn) starts; its lifespan registers it and opens a
   ``meshlib.AsyncMeshClient`` that discovers ``catalog`` in Consul;
4. requests go to the frontend, one at a time and then in a concurrent burst, and the script
   prints which catalog instance served each, Consul's view and the frontend's mesh view;
5. catalog-2 deregisters while its server keeps running: the frontend's Consul watch drops it
   and every later request goes to catalog-1;
6. everything deregisters and stops: frontend (lifespan shutdown), catalogs, then Consul.

Nothing here reads or changes ``os.environ``: each service gets its ``MESH_*``/``CONSUL_*``
variables as a mapping (``services.config_for``), exactly what it would read in production.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import uvicorn
from werkzeug.serving import WSGIRequestHandler, make_server

import meshlib

try:
    from . import services
except ImportError:  # run as a script
    import services  # type: ignore[no-redef]

CATALOG_INSTANCES = ("catalog-1", "catalog-2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_asgi(app: Any, port: int) -> Iterator[None]:
    """Serve an ASGI app with uvicorn in a thread, lifespan on (startup registers in Consul)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start (see its log above)")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its access log line per request (it would drown the output)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: Any, port: int) -> Iterator[None]:
    """Serve a WSGI app with werkzeug's threaded server in a thread."""
    server = make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=_QuietRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def fake_consul_process() -> Iterator[str]:
    """Start ``python -m meshlib.testing.fake_consul --port 0``; yield its ``host:port``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.testing.fake_consul", "--port", "0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "FakeConsul listening on ... (CONSUL_HTTP_ADDR=h:p)"
        if "CONSUL_HTTP_ADDR=" not in line:
            raise RuntimeError(f"FakeConsul did not start: {line!r}")
        yield line.split("CONSUL_HTTP_ADDR=", 1)[1].strip().rstrip(")")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def service_env(
    consul_addr: str, name: str, port: int, instance: str | None = None
) -> dict[str, str]:
    """The variables one service instance would get from its deployment."""
    env = {
        "CONSUL_HTTP_ADDR": consul_addr,
        "MESH_DISCOVERY": "consul",
        "MESH_SERVICE_NAME": name,
        "MESH_SERVICE_PORT": str(port),
        "MESH_SERVICE_ADDRESS": "127.0.0.1",
        "MESH_SERVICE_CHECK_TTL": "10s",
        "MESH_TIMEOUT": "2s",
    }
    if instance is not None:
        env["MESH_SERVICE_ID"] = instance
        env["MESH_SERVICE_META"] = f"instance={instance}"
    return env


def consul_view(consul_addr: str) -> dict[str, list[dict[str, Any]]]:
    """Every service's instances as Consul's health API reports them (what discovery reads)."""
    base = f"http://{consul_addr}"
    with httpx.Client(base_url=base, timeout=5.0) as http:
        names = sorted(n for n in http.get("/v1/catalog/services").json() if n != "consul")
        view: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            entries = http.get(f"/v1/health/service/{name}").json()
            view[name] = [
                {
                    "id": e["Service"]["ID"],
                    "address": f"{e['Service']['Address']}:{e['Service']['Port']}",
                    "checks": ",".join(sorted({c["Status"] for c in e["Checks"]})),
                }
                for e in entries
            ]
        return view


def print_consul_view(view: dict[str, list[dict[str, Any]]], out: TextIO) -> None:
    if not view:
        out.write("  (no services registered)\n")
    for name, instances in view.items():
        for inst in instances:
            out.write(
                f"  {name:<9} {inst['id']:<28} {inst['address']:<16} check: {inst['checks']}\n"
            )


@dataclass
class Report:
    """What the run observed, for the test and for anyone calling ``run()``."""

    consul_at_start: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sequential: list[str] = field(default_factory=list)
    burst: Counter[str] = field(default_factory=Counter)
    mesh_endpoints: list[dict[str, Any]] = field(default_factory=list)
    endpoints_after_deregister: int = -1
    after_deregister: Counter[str] = field(default_factory=Counter)
    consul_at_end: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _catalog_endpoints(frontend: httpx.Client) -> list[dict[str, Any]]:
    services_ = frontend.get("/mesh").json()["services"]
    endpoints: list[dict[str, Any]] = services_.get("catalog", {}).get("endpoints", [])
    return endpoints


def run(consul_addr: str, out: TextIO, *, burst: int = 40) -> Report:
    """Start the services against the Consul at ``consul_addr``, drive them, stop them."""
    report = Report()
    ports = {name: free_port() for name in (*CATALOG_INSTANCES, "frontend")}
    configs = {
        inst: services.config_for(service_env(consul_addr, "catalog", ports[inst], inst))
        for inst in CATALOG_INSTANCES
    }
    frontend_config = services.config_for(service_env(consul_addr, "frontend", ports["frontend"]))
    with contextlib.ExitStack() as stack:
        registered: dict[str, contextlib.ExitStack] = {}
        for inst in CATALOG_INSTANCES:
            # Serve first, then announce; on exit deregister first, then stop serving.
            stack.enter_context(serve_wsgi(services.create_catalog(inst), ports[inst]))
            cfg = configs[inst]
            assert cfg.registration is not None
            # Its own exit stack, so that catalog-2 can leave Consul early (closing twice is a
            # no-op, so the outer stack may close it again).
            registered[inst] = stack.enter_context(contextlib.ExitStack())
            registered[inst].enter_context(meshlib.Registrar(cfg.registration, cfg.consul))
        stack.enter_context(
            serve_asgi(services.create_frontend(frontend_config), ports["frontend"])
        )
        out.write(
            "Started on 127.0.0.1: "
            + ", ".join(f"{name} :{port}" for name, port in ports.items())
            + "\nEach registered itself in Consul. Consul's view (/v1/health/service/<name>):\n"
        )
        report.consul_at_start = consul_view(consul_addr)
        print_consul_view(report.consul_at_start, out)

        frontend = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{ports['frontend']}", timeout=5.0)
        )
        out.write("\nSix requests to the frontend, one at a time (each with a 1.5 s deadline):\n")
        for i in range(6):
            item = str(i % 3 + 1)
            r = frontend.get(f"/products/{item}", headers={meshlib.DEADLINE_HEADER: "1500"})
            r.raise_for_status()
            body = r.json()
            report.sequential.append(body["served_by"])
            out.write(
                f"  GET /products/{item} -> {r.status_code} {body['product']!r:<15} served by "
                f"{body['served_by']} (it received x-mesh-deadline-ms: "
                f"{body['catalog_saw_deadline_ms']})\n"
            )
        out.write(
            "  One at a time, each request goes to the instance with the lower latency estimate\n"
            "  (P2C Peak-EWMA; one that has not answered yet counts as 30 ms), so the split\n"
            "  follows small latency differences.\n"
        )

        with ThreadPoolExecutor(max_workers=16) as pool:
            served = list(
                pool.map(
                    lambda i: frontend.get(f"/products/{i % 3 + 1}").json()["served_by"],
                    range(burst),
                )
            )
        report.burst = Counter(served)
        out.write(
            f"\nA burst of {burst} concurrent requests: "
            + ", ".join(f"{inst} served {report.burst[inst]}" for inst in CATALOG_INSTANCES)
            + "\n  Under concurrency the load term (requests in flight + 1) spreads the calls.\n"
        )

        report.mesh_endpoints = _catalog_endpoints(frontend)
        names = {f"127.0.0.1:{ports[i]}": i for i in CATALOG_INSTANCES}
        out.write("\nThe frontend's mesh view of catalog (GET /mesh, client.mesh_state()):\n")
        for ep in report.mesh_endpoints:
            out.write(
                f"  {names.get(ep['address'], ep['address']):<10} {ep['address']:<16} "
                f"state={ep['state']:<6} requests={ep['requests']:<4} ewma={ep['ewma_ms']} ms\n"
            )

        out.write("\ncatalog-2 deregisters (its Registrar exits; its server keeps running).\n")
        registered["catalog-2"].close()
        start = time.monotonic()
        while time.monotonic() - start < 5.0:  # the watch wakes as soon as Consul answers
            report.endpoints_after_deregister = len(_catalog_endpoints(frontend))
            if report.endpoints_after_deregister == 1:
                break
            time.sleep(0.02)
        out.write(
            f"  The frontend's watch saw it after {time.monotonic() - start:.2f} s: "
            f"{report.endpoints_after_deregister} catalog endpoint(s) left.\n"
        )
        for i in range(10):
            report.after_deregister[frontend.get(f"/products/{i % 3 + 1}").json()["served_by"]] += 1
        out.write(
            "  10 more requests: "
            + ", ".join(f"{k} served {v}" for k, v in sorted(report.after_deregister.items()))
            + "\n\nStopping: the frontend deregisters in its lifespan shutdown, catalog-1 on "
            "Registrar exit.\n"
        )
    report.consul_at_end = consul_view(consul_addr)
    out.write("Consul's view after shutdown:\n")
    print_consul_view(report.consul_at_end, out)
    return report


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--consul", metavar="HOST:PORT", help="use this Consul agent instead of a FakeConsul"
    )
    args = parser.parse_args(argv)
    if args.consul:
        return run(args.consul, sys.stdout)
    with fake_consul_process() as addr:
        sys.stdout.write(f"FakeConsul (a separate process) listening at {addr}\n\n")
        report = run(addr, sys.stdout)
    sys.stdout.write("FakeConsul stopped.\n")
    return report


if __name__ == "__main__":
    main()
