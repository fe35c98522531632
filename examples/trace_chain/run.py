"""Run the chain on 127.0.0.1 and print the trace of one request (``python run.py``).

Starts C and A with uvicorn and B with werkzeug, each on a free loopback port, sends one request
to A with a deadline, prints the spans as a tree, and stops every server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

import meshlib
from meshlib.telemetry import configure, format_trace_tree

try:
    from . import services
except ImportError:  # run as a script
    import services  # type: ignore[no-redef]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_asgi(app: Any, port: int) -> Iterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve_wsgi(app: Any, port: int) -> Iterator[None]:
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def chain() -> Iterator[int]:
    """Start C, B and A; yield A's port."""
    ports = {name: free_port() for name in "abc"}
    discovery = meshlib.StaticDiscovery(
        {"b": [f"127.0.0.1:{ports['b']}"], "c": [f"127.0.0.1:{ports['c']}"]}
    )
    b_app = services.create_b(discovery)
    try:
        with (
            serve_asgi(services.create_c(), ports["c"]),
            serve_wsgi(b_app, ports["b"]),
            serve_asgi(services.create_a(discovery), ports["a"]),
        ):
            yield ports["a"]
    finally:
        b_app.extensions["mesh_client"].close()


def main() -> None:
    exporter = InMemorySpanExporter()
    telemetry = configure(traces="none", metrics_exporter="none", span_exporter=exporter)
    with chain() as port:
        r = httpx.get(
            f"http://127.0.0.1:{port}/work", headers={meshlib.DEADLINE_HEADER: "2000"}, timeout=5
        )
        print(r.json())
    telemetry.shutdown()
    print("\n".join(format_trace_tree(list(exporter.get_finished_spans()))))


if __name__ == "__main__":
    main()
