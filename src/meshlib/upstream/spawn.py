"""Running an upstream as a separate process (``spawn_upstream``), so a client under
measurement does not share its CPU, and steering it through ``/control``."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from meshlib.upstream.behaviour import UpstreamBehaviour
from meshlib.upstream.server import base_url

__all__ = ["SpawnedUpstream", "behaviour_to_argv", "spawn_upstream"]


def behaviour_to_argv(behaviour: UpstreamBehaviour) -> list[str]:
    """The ``python -m meshlib.upstream`` arguments that recreate ``behaviour`` (body as UTF-8)."""
    b = behaviour
    argv = [
        "--name", b.name,
        "--latency", repr(b.latency),
        "--slow-fraction", repr(b.slow_fraction),
        "--slow-extra", repr(b.slow_extra),
        "--capacity", repr(b.capacity),
        "--fail-fraction", repr(b.fail_fraction),
        "--fail-status", str(b.fail_status),
        "--body", b.body.decode("utf-8"),
    ]  # fmt: skip
    if b.retry_after is not None:
        argv += ["--retry-after", b.retry_after]
    if b.hang:
        argv.append("--hang")
    if b.seed is not None:
        argv += ["--seed", str(b.seed)]
    return argv


class SpawnedUpstream:
    """An upstream running in a child process, so it does not compete with the client for a CPU.

    ``stop()`` signals only this child's own pid (SIGTERM, then SIGKILL if it will not go).
    Behaviour changes and counters go through the child's ``/control`` endpoint.
    """

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int) -> None:
        self._process = process
        self._host = host
        self._port = port

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self._process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return base_url(self._host, self._port)

    def _request(self, method: str, body: bytes | None, timeout: float) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, "/control", body=body, headers=headers)
            resp = conn.getresponse()
            doc: dict[str, Any] = json.loads(resp.read())
        finally:
            conn.close()
        if resp.status != 200:
            raise ValueError(f"upstream rejected the control request: {doc.get('error', doc)}")
        return doc

    def control(self, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """POST ``fields`` to ``/control``; returns ``{"behaviour": ..., "stats": ...}``."""
        if isinstance(fields.get("body"), bytes):
            fields["body"] = fields["body"].decode("utf-8")
        return self._request("POST", json.dumps(fields).encode(), timeout)

    def state(self, timeout: float = 5.0) -> dict[str, Any]:
        """``GET /control``: the child's current behaviour and counters."""
        return self._request("GET", None, timeout)

    def set_behaviour(self, behaviour: UpstreamBehaviour, timeout: float = 5.0) -> None:
        self.control(timeout=timeout, **behaviour.to_json())

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM this child (by its own pid), wait, escalate to SIGKILL; returns the exit code."""
        proc = self._process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stdin is not None:
            proc.stdin.close()
        return int(proc.returncode)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_listening_line(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, int]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"upstream did not report LISTENING within {timeout} s")
            if not sel.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                raise RuntimeError(f"upstream exited with code {code} before listening")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    word, _, addr = line.partition(" ")
    host, _, port = addr.rpartition(":")
    if word != "LISTENING" or not port.isdigit():
        raise RuntimeError(f"unexpected first line from upstream: {line!r}")
    return host, int(port)


def spawn_upstream(
    behaviour: UpstreamBehaviour,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 10.0,
    python: str | None = None,
) -> SpawnedUpstream:
    """Start ``python -m meshlib.upstream`` for ``behaviour`` and wait for its LISTENING line.

    The child watches its stdin and exits when the parent goes away, so a crashed test run
    leaves no orphan servers behind. ``src/`` is put on the child's ``PYTHONPATH`` so this works
    from a checkout as well as from an installed package.
    """
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # src/, above the meshlib package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [
        python or sys.executable,
        "-m",
        "meshlib.upstream",
        "--host",
        host,
        "--port",
        str(port),
        "--exit-on-stdin-eof",
        *behaviour_to_argv(behaviour),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        bound_host, bound_port = _read_listening_line(proc, timeout)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                pipe.close()
        raise
    return SpawnedUpstream(proc, bound_host, bound_port)
