"""``timeout.write`` is enforced by both engines, as httpx's own transport enforces it.

httpx's ``tests/test_timeouts.py::test_write_timeout`` uploads 100 MB with ``write=1e-6``: any
wait for the socket to take more bytes is longer than that, so it must raise ``WriteTimeout``
even though the peer keeps reading. A peer that stops reading must stall an upload for no longer
than the write timeout either.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from meshlib.engine import AsyncEngine, SyncEngine

UPLOAD = b"*" * (64 * 1024 * 1024)


@pytest.fixture(params=["reads", "never-reads"])
def peer(request: pytest.FixtureRequest) -> Iterator[str]:
    """A loopback peer that drains every byte at full speed, or one that never reads."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    reads = request.param == "reads"
    conns: list[socket.socket] = []

    def drain(c: socket.socket) -> None:
        c.settimeout(0.2)
        while not stop.is_set():
            try:
                if not c.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(c)
            if reads:
                threading.Thread(target=drain, args=(c,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/"
    stop.set()
    t.join(5)
    for c in conns:
        c.close()
    srv.close()


def _timeout(peer_reads: bool) -> httpx.Timeout:
    # httpx's own test value when the peer reads; a humane one when it never does.
    return httpx.Timeout(5.0, write=1e-6) if peer_reads else httpx.Timeout(5.0, write=0.2)


async def test_async_engine_enforces_the_write_timeout(
    peer: str, request: pytest.FixtureRequest
) -> None:
    reads = "never" not in request.node.callspec.id
    async with httpx.AsyncClient(transport=AsyncEngine(), timeout=_timeout(reads)) as client:
        start = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            await client.put(peer, content=UPLOAD)
        assert time.monotonic() - start < 2.0


def test_sync_engine_enforces_the_write_timeout(peer: str, request: pytest.FixtureRequest) -> None:
    reads = "never" not in request.node.callspec.id
    with httpx.Client(transport=SyncEngine(), timeout=_timeout(reads)) as client:
        start = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            client.put(peer, content=UPLOAD)
        assert time.monotonic() - start < 2.0
