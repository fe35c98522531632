"""Small real HTTP/1.1 upstreams that misbehave on request, for the demo, tests and benchmarks.

A mesh client is only as testable as the services it talks to, and mocks at the transport layer
cannot show what real sockets do: keep-alive reuse, a slow tail, a burst of 503s with
``Retry-After``, a server that reads the request and never answers. ``UpstreamBehaviour`` says how
one upstream misbehaves; the server draws every random decision from one seeded
``random.Random`` so a test sees the same sequence of slow and failing requests on every run.

The same server runs three ways:

* ``async with Upstream(behaviour) as u`` inside the current event loop (async tests);
* ``with UpstreamThread(behaviour) as u`` on its own loop in a background thread (sync tests);
* ``python -m meshlib.upstream --name a --port 0 ...`` as a separate process, started with
  ``spawn_upstream(behaviour)``, so the demo and benchmarks do not share a CPU with the client.

Every response carries ``X-Upstream: <name>``. ``GET /echo`` (any method, any query) answers with a
JSON object describing the request: ``method``, ``path``, ``query``, ``headers`` (lower-cased
names), ``body_length``, ``server`` and ``peer_port`` (the client's source port, which tells
connection reuse apart from new connections). Any other path answers with the configured body.

``/control`` is the management endpoint, exempt from the behaviour and from the request counters:

* ``GET /control`` returns ``{"behaviour": {...}, "stats": {...}}``;
* ``POST /control`` with a JSON object of behaviour fields (``{"fail_fraction": 1.0}``; ``body`` is
  a UTF-8 string) replaces those fields, keeps the others, and returns the same document;
  ``"reset_stats": true`` zeroes the counters. An invalid document gets a 400 with
  ``{"error": "..."}`` and leaves the behaviour unchanged.

This is how a parent flips a subprocess upstream to failing mid-run; ``SpawnedUpstream.control``
and ``SpawnedUpstream.set_behaviour`` wrap it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http.client
import json
import math
import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple, Self

import httptools

__all__ = [
    "SpawnedUpstream",
    "Upstream",
    "UpstreamBehaviour",
    "UpstreamStats",
    "UpstreamThread",
    "behaviour_to_argv",
    "main",
    "spawn_upstream",
]

_CONTROL_PATH: Final = b"/control"
_ECHO_PATH: Final = b"/echo"
_FAIL_BODY: Final = b"injected failure\n"
# Requests queued on one connection (pipelined behind a slow or hanging one) before the server
# stops reading from it: bounds memory when a client pipelines into a hung upstream.
_MAX_QUEUED: Final = 128
_MAX_CONTROL_BODY: Final = 64 * 1024


def _check_text(field_name: str, value: object) -> None:
    """Reject text that cannot be sent as an HTTP header value (it would corrupt the framing)."""
    if not isinstance(value, str):
        raise TypeError(f"{field_name} must be a str, got {type(value).__name__}")
    if not value or not value.isascii() or not value.isprintable():
        raise ValueError(f"{field_name} must be non-empty printable ASCII, got {value!r}")


def _check_number(field_name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field_name} must be a number, got {type(value).__name__}")
    if math.isfinite(high) and not low <= value <= high:
        raise ValueError(f"{field_name} must be within [{low:g}, {high:g}], got {value}")
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{field_name} must be a finite number >= {low:g}, got {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class UpstreamBehaviour:
    """How one upstream answers: its name, added latency, slow tail, failures, or not at all.

    Frozen so a behaviour can be shared between threads and swapped atomically; validated on
    construction so a typo in a test or a ``/control`` document fails loudly instead of silently
    producing a healthy upstream. ``seed`` makes the slow/fail draws reproducible.
    """

    name: str
    latency: float = 0.0
    """Seconds added to every response (failures included)."""
    slow_fraction: float = 0.0
    """Fraction of requests that get ``slow_extra`` more seconds on top of ``latency``."""
    slow_extra: float = 0.0
    """Seconds a slow request waits on top of ``latency`` (e.g. 20% of requests +50 ms)."""
    fail_fraction: float = 0.0
    """Fraction of requests answered with ``fail_status`` instead of the body."""
    fail_status: int = 503
    retry_after: str | None = None
    """``Retry-After`` header value sent with every failure response, if set."""
    hang: bool = False
    """Read requests but never answer them (the connection stays open until the client gives up)."""
    body: bytes = b"ok"
    seed: int | None = None
    """Seed for the slow/fail draws; each ``set_behaviour`` with a seed re-seeds the RNG."""

    def __post_init__(self) -> None:
        _check_text("name", self.name)
        _check_number("latency", self.latency, 0.0, math.inf)
        _check_number("slow_fraction", self.slow_fraction, 0.0, 1.0)
        _check_number("slow_extra", self.slow_extra, 0.0, math.inf)
        _check_number("fail_fraction", self.fail_fraction, 0.0, 1.0)
        if isinstance(self.fail_status, bool) or not isinstance(self.fail_status, int):
            raise TypeError(f"fail_status must be an int, got {type(self.fail_status).__name__}")
        if not 200 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be within [200, 599], got {self.fail_status}")
        if self.retry_after is not None:
            _check_text("retry_after", self.retry_after)
        if not isinstance(self.hang, bool):
            raise TypeError(f"hang must be a bool, got {type(self.hang).__name__}")
        if not isinstance(self.body, bytes):
            raise TypeError(f"body must be bytes, got {type(self.body).__name__}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")

    def to_json(self) -> dict[str, Any]:
        """The behaviour as a JSON-ready dict (``body`` as UTF-8 text), as ``/control`` shows it."""
        doc = dataclasses.asdict(self)
        doc["body"] = self.body.decode("utf-8", errors="replace")
        return doc

    def updated(self, fields: Mapping[str, Any]) -> UpstreamBehaviour:
        """A copy with ``fields`` replaced, as ``POST /control`` does; ``body`` may be text."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(unknown)}")
        changes = dict(fields)
        if isinstance(changes.get("body"), str):
            changes["body"] = changes["body"].encode("utf-8")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """A consistent snapshot of one upstream's counters (``/control`` requests are not counted)."""

    total: int
    failures: int
    by_path: Mapping[str, int]
    connections: int
    """Connections accepted since start (or the last reset): fewer than ``total`` means reuse."""
    open_connections: int
    recent_headers: tuple[tuple[tuple[str, str], ...], ...]
    """Headers of the last N requests, oldest first, names lower-cased, in arrival order."""

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "failures": self.failures,
            "by_path": dict(self.by_path),
            "connections": self.connections,
            "open_connections": self.open_connections,
            "recent_headers": [[list(pair) for pair in headers] for headers in self.recent_headers],
        }


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def _response(
    status: int,
    body: bytes,
    name: bytes,
    *,
    close: bool,
    content_type: bytes = b"text/plain",
    extra: Sequence[tuple[bytes, bytes]] = (),
    head: bool = False,
) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s" % (status, _reason(status)),
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % len(body),
        b"X-Upstream: " + name,
    ]
    lines.extend(k + b": " + v for k, v in extra)
    if close:
        lines.append(b"Connection: close")
    head_bytes = b"\r\n".join(lines) + b"\r\n\r\n"
    return head_bytes if head else head_bytes + body


class _Prepared:
    """Responses that depend only on the behaviour, built once per behaviour change (hot path)."""

    __slots__ = ("behaviour", "fail", "fail_close", "name", "ok", "ok_close")

    def __init__(self, behaviour: UpstreamBehaviour) -> None:
        self.behaviour = behaviour
        self.name = behaviour.name.encode("ascii")
        self.ok = _response(200, behaviour.body, self.name, close=False)
        self.ok_close = _response(200, behaviour.body, self.name, close=True)
        extra = (
            []
            if behaviour.retry_after is None
            else [(b"Retry-After", behaviour.retry_after.encode())]
        )
        self.fail = _response(
            behaviour.fail_status, _FAIL_BODY, self.name, close=False, extra=extra
        )
        self.fail_close = _response(
            behaviour.fail_status, _FAIL_BODY, self.name, close=True, extra=extra
        )


class _Request(NamedTuple):
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    body_length: int
    keep_alive: bool
    peer_port: int


class _Reply(NamedTuple):
    data: bytes
    delay: float
    hang: bool
    close: bool


class _Core:
    """The state one server shares across its connections: behaviour, RNG and counters.

    Only the event loop's thread serves requests, but ``stats()`` and ``set_behaviour()`` may be
    called from any thread (sync tests, the demo), so counters and RNG sit behind one lock.
    """

    def __init__(
        self, behaviour: UpstreamBehaviour, rng: random.Random | None, history: int
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self._lock = threading.Lock()
        self._rng = rng if rng is not None else random.Random(behaviour.seed)
        self._prepared = _Prepared(behaviour)
        self._history = history
        self._reset_locked()
        self._open = 0

    def _reset_locked(self) -> None:
        self._total = 0
        self._failures = 0
        self._by_path: dict[bytes, int] = {}
        self._connections = 0
        self._recent: deque[list[tuple[bytes, bytes]]] = deque(maxlen=self._history)

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self._prepared.behaviour

    def set_behaviour(self, behaviour: UpstreamBehaviour) -> None:
        if not isinstance(behaviour, UpstreamBehaviour):
            raise TypeError(f"expected UpstreamBehaviour, got {type(behaviour).__name__}")
        prepared = _Prepared(behaviour)
        with self._lock:
            if behaviour.seed is not None:
                self._rng.seed(behaviour.seed)
            self._prepared = prepared

    def reset_stats(self) -> None:
        with self._lock:
            self._reset_locked()

    def stats(self) -> UpstreamStats:
        with self._lock:
            return UpstreamStats(
                total=self._total,
                failures=self._failures,
                by_path={k.decode("latin-1"): v for k, v in self._by_path.items()},
                connections=self._connections,
                open_connections=self._open,
                recent_headers=tuple(
                    tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers)
                    for headers in self._recent
                ),
            )

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1
            self._open += 1

    def connection_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def handle(self, req: _Request) -> _Reply:
        url = req.url
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        close = not req.keep_alive
        if path == _CONTROL_PATH:
            return _Reply(self._control(req, close), 0.0, False, close)
        with self._lock:
            prepared = self._prepared
            b = prepared.behaviour
            slow = b.slow_fraction > 0.0 and self._rng.random() < b.slow_fraction
            fail = b.fail_fraction > 0.0 and self._rng.random() < b.fail_fraction
            self._total += 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
            if fail:
                self._failures += 1
            if self._history:
                self._recent.append(req.headers)
        delay = b.latency + b.slow_extra if slow else b.latency
        if b.hang:
            return _Reply(b"", delay, True, close)
        head = req.method == b"HEAD"
        if fail:
            if head:
                extra = [] if b.retry_after is None else [(b"Retry-After", b.retry_after.encode())]
                data = _response(
                    b.fail_status, _FAIL_BODY, prepared.name, close=close, extra=extra, head=True
                )
            else:
                data = prepared.fail_close if close else prepared.fail
        elif path == _ECHO_PATH:
            data = self._echo(req, path, url[q + 1 :] if q >= 0 else b"", prepared, close, head)
        elif head:
            data = _response(200, b.body, prepared.name, close=close, head=True)
        else:
            data = prepared.ok_close if close else prepared.ok
        return _Reply(data, delay, False, close)

    @staticmethod
    def _echo(
        req: _Request, path: bytes, query: bytes, prepared: _Prepared, close: bool, head: bool
    ) -> bytes:
        headers: dict[str, str] = {}
        for k, v in req.headers:
            key = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        doc = {
            "method": req.method.decode("latin-1"),
            "path": path.decode("latin-1"),
            "query": query.decode("latin-1"),
            "headers": headers,
            "body_length": req.body_length,
            "server": prepared.behaviour.name,
            "peer_port": req.peer_port,
        }
        body = json.dumps(doc).encode()
        return _response(
            200, body, prepared.name, close=close, content_type=b"application/json", head=head
        )

    def _control(self, req: _Request, close: bool) -> bytes:
        name = self._prepared.name
        if req.method == b"POST":
            try:
                fields = json.loads(req.body or b"{}")
                if not isinstance(fields, dict):
                    raise ValueError("the control document must be a JSON object")
                reset = fields.pop("reset_stats", False)
                if not isinstance(reset, bool):
                    raise ValueError("reset_stats must be a boolean")
                if fields:
                    self.set_behaviour(self.behaviour.updated(fields))
                if reset:
                    self.reset_stats()
            except (ValueError, TypeError) as exc:
                body = json.dumps({"error": str(exc)}).encode()
                return _response(400, body, name, close=close, content_type=b"application/json")
        elif req.method != b"GET":
            body = json.dumps({"error": "use GET or POST"}).encode()
            return _response(405, body, name, close=close, content_type=b"application/json")
        doc = {"behaviour": self.behaviour.to_json(), "stats": self.stats().to_json()}
        body = json.dumps(doc).encode()
        return _response(
            200, body, self._prepared.name, close=close, content_type=b"application/json"
        )


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools parses, replies go out in request order.

    Replies with no delay are written straight from ``data_received`` (the hot path); as soon as
    one reply must wait (latency, a slow draw, a hang) later replies queue behind it in a worker
    task, because HTTP/1.1 answers pipelined requests strictly in order.
    """

    def __init__(self, core: _Core, registry: set[_Connection]) -> None:
        self._core = core
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._parser: Any = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] | None = None
        self._body_length = 0
        self._peer_port = 0
        self._closing = False
        self._queue: deque[tuple[float, _Reply]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer_port = int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else 0
        self._registry.add(self)
        self._core.connection_opened()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
        if self in self._registry:
            self._registry.discard(self)
            self._core.connection_closed()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._bad_request()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = None
        self._body_length = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._url.partition(b"?")[0] == _CONTROL_PATH:
            self._body = []
        if self._queue is not None or self._transport is None:
            return  # an interim 100 must not overtake the replies still queued before it
        for k, v in self._headers:
            if k.lower() == b"expect" and v.lower() == b"100-continue":
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_length += len(body)
        if self._body is not None and self._body_length <= _MAX_CONTROL_BODY:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        req = _Request(
            self._parser.get_method(),
            self._url,
            self._headers,
            b"".join(self._body) if self._body is not None else b"",
            self._body_length,
            bool(self._parser.should_keep_alive()),
            self._peer_port,
        )
        reply = self._core.handle(req)
        if reply.close:
            self._closing = True  # ignore anything pipelined after a closing request
        if self._queue is None and reply.delay <= 0.0 and not reply.hang:
            self._write(reply)
            return
        if self._queue is None:
            self._queue = deque()
            self._worker = asyncio.get_running_loop().create_task(self._drain_queue())
        self._queue.append((asyncio.get_running_loop().time() + reply.delay, reply))
        if len(self._queue) >= _MAX_QUEUED and self._transport and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    # internals

    def _write(self, reply: _Reply) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(reply.data)
        if reply.close:
            transport.close()

    async def _drain_queue(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        try:
            while queue:
                ready_at, reply = queue[0]
                if reply.hang:
                    await loop.create_future()  # never resolves; cancelled when the client leaves
                wait = ready_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                self._write(reply)
                if self._paused and len(queue) < _MAX_QUEUED // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
        finally:
            self._queue = None
            self._worker = None

    def _bad_request(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            name = self._core.behaviour.name.encode("ascii")
            self._transport.write(_response(400, b"bad request\n", name, close=True))
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Upstream:
    """An upstream server in the running event loop, for async tests and the in-process demo.

    ``port=0`` lets the kernel choose a free port, so parallel tests never collide; read the
    chosen one from ``.port``/``.url`` once started.
    """

    def __init__(
        self,
        behaviour: UpstreamBehaviour,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        history: int = 32,
    ) -> None:
        self._core = _Core(behaviour, rng, history)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> Self:
        """Bind and start accepting; returns ``self`` so it chains."""
        if self._server is not None:
            raise RuntimeError("upstream already started")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self._core, self._connections),
            self._host,
            self._requested_port,
            backlog=1024,
        )
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._connections):
            conn.abort()
        await server.wait_closed()
        # Let the aborted transports run connection_lost so their sockets are really closed.
        for _ in range(3):
            await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("upstream not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:40123``."""
        return _url(self._host, self.port)

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self._core.behaviour

    def set_behaviour(self, behaviour: UpstreamBehaviour) -> None:
        """Swap the behaviour for requests that arrive from now on (thread-safe).

        A behaviour with a ``seed`` re-seeds the RNG, so the draws after the swap are reproducible.
        Requests already hanging stay hung: they were accepted under the old behaviour.
        """
        self._core.set_behaviour(behaviour)

    def stats(self) -> UpstreamStats:
        """A consistent snapshot of the counters (thread-safe)."""
        return self._core.stats()

    def reset_stats(self) -> None:
        self._core.reset_stats()


class UpstreamThread:
    """An ``Upstream`` on its own event loop in a daemon thread, for synchronous tests.

    ``set_behaviour``/``stats`` are safe to call from the test's thread; ``stop`` (or leaving the
    ``with`` block) shuts the loop down and joins the thread.
    """

    def __init__(
        self,
        behaviour: UpstreamBehaviour,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        history: int = 32,
        start_timeout: float = 10.0,
    ) -> None:
        self._upstream = Upstream(behaviour, host=host, port=port, rng=rng, history=history)
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("upstream thread already started")
        self._thread = threading.Thread(
            target=self._run, name=f"upstream-{self.behaviour.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError(f"upstream did not start within {self._start_timeout} s")
        if self._error is not None:
            self._thread.join(self._start_timeout)
            raise RuntimeError("upstream failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start(); a thread has nowhere else to report
            self._error = self._error or exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self._upstream.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._upstream.stop()

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"upstream thread did not stop within {timeout} s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._upstream.host

    @property
    def port(self) -> int:
        return self._upstream.port

    @property
    def url(self) -> str:
        return self._upstream.url

    @property
    def behaviour(self) -> UpstreamBehaviour:
        return self._upstream.behaviour

    def set_behaviour(self, behaviour: UpstreamBehaviour) -> None:
        self._upstream.set_behaviour(behaviour)

    def stats(self) -> UpstreamStats:
        return self._upstream.stats()

    def reset_stats(self) -> None:
        self._upstream.reset_stats()


def behaviour_to_argv(behaviour: UpstreamBehaviour) -> list[str]:
    """The ``python -m meshlib.upstream`` arguments that recreate ``behaviour`` (body as UTF-8)."""
    b = behaviour
    argv = [
        "--name", b.name,
        "--latency", repr(b.latency),
        "--slow-fraction", repr(b.slow_fraction),
        "--slow-extra", repr(b.slow_extra),
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
        return _url(self._host, self._port)

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
    package_root = str(Path(__file__).resolve().parent.parent)
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshlib.upstream",
        description="Serve one HTTP/1.1 upstream with controllable misbehaviour until SIGTERM.",
    )
    p.add_argument("--name", default="upstream", help="value of the X-Upstream header")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    p.add_argument("--slow-fraction", type=float, default=0.0)
    p.add_argument("--slow-extra", type=float, default=0.0, help="extra seconds for slow requests")
    p.add_argument("--fail-fraction", type=float, default=0.0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--retry-after", default=None, help="Retry-After value sent with failures")
    p.add_argument("--hang", action="store_true", help="read requests, never answer")
    p.add_argument("--body", default="ok", help="response body (UTF-8)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--history", type=int, default=32, help="request headers kept for /control")
    p.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent died)"
    )
    return p


async def _serve(behaviour: UpstreamBehaviour, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    up = Upstream(behaviour, host=args.host, port=args.port, history=args.history)
    try:
        await up.start()
    except OSError as exc:
        print(f"meshlib.upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(f"LISTENING {up.host}:{up.port}\n")
        sys.stdout.flush()
        if args.exit_on_stdin_eof:
            fd = sys.stdin.fileno()

            def _on_stdin() -> None:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(fd)
                    stop.set()

            loop.add_reader(fd, _on_stdin)
        await stop.wait()
    finally:
        await up.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m meshlib.upstream``; exits 0 on SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    try:
        behaviour = UpstreamBehaviour(
            name=args.name,
            latency=args.latency,
            slow_fraction=args.slow_fraction,
            slow_extra=args.slow_extra,
            fail_fraction=args.fail_fraction,
            fail_status=args.fail_status,
            retry_after=args.retry_after,
            hang=args.hang,
            body=args.body.encode("utf-8"),
            seed=args.seed,
        )
    except (TypeError, ValueError) as exc:
        _parser().error(str(exc))
    return asyncio.run(_serve(behaviour, args))


if __name__ == "__main__":
    raise SystemExit(main())
