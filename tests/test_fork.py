"""A client used before ``os.fork()`` keeps working in both processes, on its own connections.

gunicorn's ``preload_app`` imports the application, and often uses its clients, before forking
the workers. Inherited keep-alive connections are the same TCP connections in parent and child:
without care both write requests on them and read each other's responses. Real forks, a real
upstream process, every response checked against the request that asked for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator

import pytest

import meshlib
from meshlib.upstream import SpawnedUpstream, UpstreamBehaviour, spawn_upstream

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
CALLS = 150


@pytest.fixture(scope="module")
def upstream() -> Iterator[SpawnedUpstream]:
    with spawn_upstream(UpstreamBehaviour(name="echo")) as up:
        yield up


def _check(doc: dict[str, object], tag: str) -> bool:
    return doc["query"] == f"q={tag}"


def _sync_calls(client: meshlib.MeshClient, who: str) -> tuple[int, set[object]]:
    bad, ports = 0, set()
    for i in range(CALLS):
        doc = client.get(f"http://users/echo?q={who}-{i}").json()
        bad += not _check(doc, f"{who}-{i}")
        ports.add(doc["peer_port"])
    return bad, ports


async def _async_calls(client: meshlib.AsyncMeshClient, who: str) -> tuple[int, set[object]]:
    bad, ports = 0, set()
    for i in range(CALLS):
        doc = (await client.get(f"http://users/echo?q={who}-{i}")).json()
        bad += not _check(doc, f"{who}-{i}")
        ports.add(doc["peer_port"])
    return bad, ports


def _fork(child: object) -> tuple[int, int]:
    """Run ``child()`` in a forked process; it reports on a pipe. Returns (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running any of the parent's cleanup
        code = 1
        try:
            result = child()  # type: ignore[operator]
            os.write(w, json.dumps(result).encode())
            code = 0
        except BaseException as exc:  # a failure must reach the parent, not pytest
            os.write(w, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _join(pid: int, r: int) -> dict[str, object]:
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    report: dict[str, object] = json.loads(data or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def test_sync_client_after_fork(upstream: SpawnedUpstream) -> None:
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{upstream.port}"]})
    with meshlib.MeshClient(discovery=discovery, timeout=5.0) as client:
        before = client.get("http://users/echo?q=before").json()["peer_port"]

        def child() -> dict[str, object]:
            bad, ports = _sync_calls(client, "child")
            return {"bad": bad, "ports": sorted(ports)}  # type: ignore[type-var]

        pid, r = _fork(child)
        bad, ports = _sync_calls(client, "parent")
        report = _join(pid, r)
    assert bad == 0
    assert report["bad"] == 0
    assert before in ports  # the parent kept its connection
    assert before not in report["ports"]  # the child opened its own


def test_async_client_after_fork(upstream: SpawnedUpstream) -> None:
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{upstream.port}"]})
    client = meshlib.AsyncMeshClient(discovery=discovery, timeout=5.0)

    async def first() -> object:
        return (await client.get("http://users/echo?q=before")).json()["peer_port"]

    loop = asyncio.new_event_loop()
    try:
        before = loop.run_until_complete(first())

        def child() -> dict[str, object]:
            bad, ports = asyncio.run(_async_calls(client, "child"))
            return {"bad": bad, "ports": sorted(ports)}  # type: ignore[type-var]

        pid, r = _fork(child)
        bad, ports = loop.run_until_complete(_async_calls(client, "parent"))
        report = _join(pid, r)
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert bad == 0
    assert report["bad"] == 0
    assert before in ports
    assert before not in report["ports"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
