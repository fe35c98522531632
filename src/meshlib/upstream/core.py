"""The server itself: request parsing, the behaviour's decisions, and the replies.

``Core`` holds the state every connection shares (behaviour, seeded RNG, counters, headers);
``Connection`` parses with httptools and answers, from ``data_received`` when nothing waits.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final, NamedTuple

import httptools

from meshlib.upstream.behaviour import ServiceQueue, UpstreamBehaviour, UpstreamStats

__all__ = ["Connection", "Core"]

_CONTROL_PATH: Final = b"/control"
_ECHO_PATH: Final = b"/echo"
_FAIL_BODY: Final = b"injected failure\n"
# Requests queued on one connection (pipelined behind a slow or hanging one) before the server
# stops reading from it: bounds memory when a client pipelines into a hung upstream.
_MAX_QUEUED: Final = 128
_MAX_CONTROL_BODY: Final = 64 * 1024


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


class Core:
    """The state one server shares across its connections: behaviour, RNG and counters.

    ``stats()`` and ``set_behaviour()`` may be called from any thread (sync tests, the demo),
    so counters and RNG sit behind one lock."""

    def __init__(
        self, behaviour: UpstreamBehaviour, rng: random.Random | None, history: int
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self._lock = threading.Lock()
        self._rng = rng if rng is not None else random.Random(behaviour.seed)
        self._prepared = _Prepared(behaviour)
        self._history = history
        self._queue = ServiceQueue()
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
        delay = self._queue.delay(b, slow)
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


class Connection(asyncio.Protocol):
    """One keep-alive connection: httptools parses, replies go out in request order.

    Replies with no delay are written straight from ``data_received`` (the hot path); as soon as
    one reply must wait (latency, a slow draw, a hang) later replies queue behind it in a worker
    task, because HTTP/1.1 answers pipelined requests strictly in order.
    """

    def __init__(self, core: Core, registry: set[Connection]) -> None:
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
