"""Running the agent's HTTP and TCP health checks, as a Consul agent does for its local checks.

A service under test usually registers itself with an HTTP check; without a runner it would stay
``critical`` forever and vanish from every ``?passing`` query. Each agent-registered HTTP or TCP
check gets one task on FakeConsul's loop that probes its target every ``Interval`` (at least one
second, like Consul's minimum) and records the result with Consul's status mapping (2xx passing,
429 warning, anything else critical) and output texts. Unlike Consul, the first probe runs at
once rather than after a random stagger, so tests see a result quickly. Script, Docker, gRPC,
H2PING, UDP and OS-service checks are not executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from urllib.parse import urlsplit

from .model import CRITICAL, PASSING, WARNING, CheckDef, CheckRec
from .state import State

__all__ = ["CheckRunner", "probe"]

_MIN_INTERVAL = 1.0
_DEFAULT_TIMEOUT = 10.0
_OUTPUT_LIMIT = 4 * 1024


def _dial_error(exc: BaseException) -> str:
    """Go's wording for the usual dial failures, so outputs read like a real agent's."""
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    return str(exc)


async def _probe_tcp(target: str, limit: float) -> tuple[str, str]:
    host, _, port = target.rpartition(":")
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except TimeoutError:
        return CRITICAL, f"dial tcp {target}: i/o timeout"
    except (OSError, ValueError) as exc:
        return CRITICAL, f"dial tcp {target}: {_dial_error(exc)}"
    return PASSING, f"TCP connect {target}: Success"


async def _probe_http(defn: CheckDef, limit: float) -> tuple[str, str]:
    url = defn.http
    method = defn.method or "GET"
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context: ssl.SSLContext | None = None
    if secure:
        context = ssl.create_default_context()
        if defn.tls_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = defn.body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    headers = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}
    for name, values in (defn.header or {}).items():
        headers[name] = ", ".join(values)
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    lines.extend([f"Content-Length: {len(body)}", "Connection: close", "", ""])
    verb = method.capitalize() if method in ("GET", "POST", "HEAD") else method
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=context,
                server_hostname=(defn.tls_server_name or host) if context else None,
            )
            try:
                writer.write("\r\n".join(lines).encode("latin-1") + body)
                status_line = (await reader.readline()).decode("latin-1").strip()
                while (await reader.readline()).strip():
                    pass
                payload = await reader.read(_OUTPUT_LIMIT)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return CRITICAL, (
            f'{verb} "{url}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
    except (OSError, ValueError) as exc:
        return CRITICAL, f'{verb} "{url}": dial tcp {host}:{port}: {_dial_error(exc)}'
    _, _, rest = status_line.partition(" ")
    code_text = rest.split(" ", 1)[0]
    code = int(code_text) if code_text.isdigit() else 0
    output = f"HTTP {method} {url}: {rest} Output: {payload.decode(errors='replace')}"
    if 200 <= code < 300:
        return PASSING, output
    if code == 429:
        return WARNING, output
    return CRITICAL, output


async def probe(defn: CheckDef) -> tuple[str, str]:
    """Run one HTTP or TCP check definition; returns its (status, output)."""
    timeout = defn.timeout or _DEFAULT_TIMEOUT
    if defn.http:
        return await _probe_http(defn, timeout)
    return await _probe_tcp(defn.tcp, timeout)


class CheckRunner:
    """One probing task per runnable check on the agent's node; lives on FakeConsul's loop."""

    def __init__(self, state: State, node: str) -> None:
        self._state = state
        self._node = node
        self._tasks: dict[str, tuple[CheckDef, asyncio.Task[None]]] = {}

    def sync(self) -> None:
        """Start tasks for new or changed checks and stop those whose check went away."""
        with self._state.lock:
            wanted = {
                c.check_id: c.definition
                for c in self._state.node_checks(self._node)
                if c.runnable and c.definition is not None
            }
        for check_id, (defn, task) in list(self._tasks.items()):
            if wanted.get(check_id) is not defn:
                task.cancel()
                del self._tasks[check_id]
        loop = asyncio.get_running_loop()
        for check_id, defn in wanted.items():
            if check_id not in self._tasks:
                task = loop.create_task(self._run(check_id, defn))
                self._tasks[check_id] = (defn, task)

    def stop(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def _current(self, check_id: str, defn: CheckDef) -> CheckRec | None:
        check = self._state.check(self._node, check_id)
        return check if check is not None and check.definition is defn else None

    async def _run(self, check_id: str, defn: CheckDef) -> None:
        interval = max(defn.interval or _MIN_INTERVAL, _MIN_INTERVAL)
        while True:
            status, output = await probe(defn)
            with self._state.write() as tx:
                check = self._current(check_id, defn)
                if check is None:
                    return
                self._state.set_status(tx, check, status, output)
            await asyncio.sleep(interval)
