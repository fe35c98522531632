"""The servers a benchmark talks to: nginx replicas, an HAProxy sidecar, Python upstreams.

Why separate processes with their own throw-away configs: the client's CPU is the quantity
under test, so no server may share the client's process; and a benchmark must never touch a
system service. Every server here listens on 127.0.0.1 on a free port, keeps its pid file and
logs in a private temp dir, runs in the foreground (``daemon off;`` / ``haproxy -db``) so its
pid is ``Popen.pid``, and is stopped by that pid alone (terminate, wait, kill if it will not go).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from meshlib.upstream import SpawnedUpstream, UpstreamBehaviour, spawn_upstream

__all__ = [
    "HAPROXY",
    "NGINX",
    "Server",
    "free_port",
    "haproxy",
    "nginx_mtls",
    "nginx_replicas",
    "proc_cpu_seconds",
    "python_upstreams",
]

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"

_NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port}{ssl};
{tls}    location / {{
      add_header X-Upstream {name} always;
      return 200 "ok";
    }}
  }}
}}
"""

_HAPROXY_CONF = """\
global
  nbthread 1
  pidfile {d}/haproxy.pid
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s

frontend sidecar
  bind 127.0.0.1:{port}
  default_backend replicas

backend replicas
  balance {balance}
{servers}
"""


@dataclass(frozen=True)
class Server:
    """A running server: its process (stopped by pid) and the URL it answers on."""

    name: str
    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, log: str) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within 10 s; see {log}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM this process by its own pid, wait, then SIGKILL if needed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)


@contextlib.contextmanager
def _spawned(
    argv: Sequence[str], tmp: str, port: int, what: str, scheme: str = "http"
) -> Iterator[Server]:
    log_path = os.path.join(tmp, "stderr.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(proc, port, what, log_path)
        yield Server(what, proc, f"{scheme}://127.0.0.1:{port}")
    finally:
        _stop(proc)


@contextlib.contextmanager
def nginx_replicas(count: int = 3, header: str | None = None) -> Iterator[list[Server]]:
    """``count`` nginx processes (one worker each) answering ``200 ok`` with keep-alive; the
    ``X-Upstream`` header names the replica (``nginxN``), or is ``header`` if given."""
    tmp = tempfile.mkdtemp(prefix="meshlib-bench-nginx-")
    try:
        with contextlib.ExitStack() as stack:
            servers: list[Server] = []
            for i in range(count):
                d = os.path.join(tmp, f"n{i}")
                os.mkdir(d)
                port = free_port()
                conf = os.path.join(d, "nginx.conf")
                with open(conf, "w") as f:
                    name = header or f"nginx{i}"
                    f.write(_NGINX_CONF.format(d=d, port=port, name=name, ssl="", tls=""))
                argv = [NGINX, "-c", conf, "-p", d, "-e", os.path.join(d, "error.log")]
                servers.append(stack.enter_context(_spawned(argv, d, port, f"nginx{i}")))
            yield servers
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_NGINX_MTLS = """\
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {client_ca};
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
"""


@contextlib.contextmanager
def nginx_mtls(
    cert: str, key: str, client_ca: str, header: str = "$connection"
) -> Iterator[Server]:
    """One nginx (one worker, keep-alive) over TLS that requires a client certificate chaining
    to ``client_ca`` and presents ``cert``; ``X-Upstream`` carries ``header`` (by default the
    connection's serial number, so a client can count the connections it opened)."""
    tmp = tempfile.mkdtemp(prefix="meshlib-bench-nginx-tls-")
    try:
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        tls = _NGINX_MTLS.format(cert=cert, key=key, client_ca=client_ca)
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(d=tmp, port=port, name=header, ssl=" ssl", tls=tls))
        argv = [NGINX, "-c", conf, "-p", tmp, "-e", os.path.join(tmp, "error.log")]
        with _spawned(argv, tmp, port, "nginx-mtls", scheme="https") as srv:
            yield srv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def haproxy(backends: Sequence[Server], balance: str = "roundrobin") -> Iterator[Server]:
    """One HAProxy (``nbthread 1``, ``mode http``, keep-alive) in front of ``backends``."""
    tmp = tempfile.mkdtemp(prefix="meshlib-bench-haproxy-")
    try:
        port = free_port()
        servers = "\n".join(f"  server s{i} {b.address}" for i, b in enumerate(backends))
        conf = os.path.join(tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(_HAPROXY_CONF.format(d=tmp, port=port, balance=balance, servers=servers))
        with _spawned([HAPROXY, "-db", "-f", conf], tmp, port, f"haproxy-{balance}") as srv:
            yield srv
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def python_upstreams(behaviours: Sequence[UpstreamBehaviour]) -> Iterator[list[SpawnedUpstream]]:
    """meshlib's own upstream servers as subprocesses, each stopped by its pid."""
    started: list[SpawnedUpstream] = []
    try:
        for b in behaviours:
            started.append(spawn_upstream(b, host="127.0.0.1"))
        yield started
    finally:
        for u in started:
            u.stop()


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process from ``/proc/<pid>/stat`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
