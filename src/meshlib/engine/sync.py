"""The blocking-socket driver of the engine: an ``httpx.BaseTransport`` for mesh endpoints.

Why not stock httpx: httpcore's pool plus h11 costs hundreds of microseconds of client
CPU per request and scans the whole pool for every request, while mesh endpoints are
always plain HTTP/1.1 origins picked by the balancer. This driver keeps httpx as the
user-facing API and does the minimum per request: one dict lookup for the origin's pool,
a LIFO pop under a ``threading.Lock``, a zero-timeout ``poll`` to make sure the idle
socket was not closed by the server, one ``sendall`` for head plus in-memory body, and
``recv_into`` a per-connection buffer parsed by the shared
:class:`~meshlib.engine.http11.ResponseParser` (httptools). ``settimeout`` is only called
when the timeout actually changes. It is thread-safe: pools are shared by all threads and
a request that finds its origin at ``max_connections`` waits FIFO for a released one.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import httpx

from meshlib.extensions import DEADLINE

from .http11 import (
    LAST_CHUNK,
    EngineBase,
    OriginKey,
    PoolBase,
    connect_error,
    connect_refused,
    encode_head,
    frame_chunk,
    in_memory_body,
    is_chunked,
    origin_key,
    read_error,
    timeouts,
    write_error,
)
from .parser import ResponseParser

__all__ = ["SyncEngine"]

_BUFFER_SIZE = 65536


class _Connection:
    """A connected (possibly TLS) socket plus its receive buffer and liveness poller."""

    __slots__ = (
        "_poller",
        "_timeout",
        "hard",
        "idle",
        "idle_since",
        "parser",
        "pool",
        "sock",
        "view",
    )

    def __init__(self, pool: _Pool, sock: socket.socket, limit: float | None) -> None:
        self.pool = pool
        self.sock = sock
        self.view = memoryview(bytearray(_BUFFER_SIZE))
        self.parser = ResponseParser()
        self.idle = False
        self.idle_since = 0.0
        self._timeout: Any = limit
        self.hard: float | None = None
        """The current exchange's deadline on ``time.monotonic()``: no read or write outlives it."""
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    def alive(self) -> bool:
        """An idle socket that is readable was closed by the peer (or holds garbage)."""
        return not self._poller.poll(0)

    def _bounded(self, limit: float | None, request: httpx.Request, write: bool) -> float | None:
        """``limit`` capped by the time left before the exchange's deadline."""
        if self.hard is None:
            return limit
        left = self.hard - time.monotonic()
        if left <= 0:
            if write:
                raise httpx.WriteTimeout("Deadline reached sending the request.", request=request)
            raise httpx.ReadTimeout("Deadline reached reading the response.", request=request)
        return left if limit is None or left < limit else limit

    def write(self, data: bytes, request: httpx.Request, limit: float | None) -> None:
        limit = self._bounded(limit, request, True)
        if limit != self._timeout:
            self.sock.settimeout(limit)
            self._timeout = limit
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise write_error(exc, request) from exc

    def receive(self, parser: ResponseParser, request: httpx.Request, limit: float | None) -> None:
        """Read once and feed the parser; EOF finishes or fails the response."""
        limit = self._bounded(limit, request, False)
        if limit != self._timeout:
            self.sock.settimeout(limit)
            self._timeout = limit
        try:
            n = self.sock.recv_into(self.view)
        except OSError as exc:
            raise read_error(exc, request) from exc
        if n:
            parser.feed(self.view[:n])
        else:
            parser.feed_eof()

    def abort(self) -> None:
        self.pool.live.discard(self)
        with contextlib.suppress(OSError):
            self.sock.close()


class _Waiter:
    """A blocked request: its pre-acquired lock is released when something is handed over."""

    __slots__ = ("done", "lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.done = False
        self.value: _Connection | None = None


class _Pool(PoolBase[_Connection]):
    """Per-origin pool guarded by one lock; sockets are connected outside the lock."""

    def __init__(self, engine: SyncEngine, request: httpx.Request, key: OriginKey) -> None:
        super().__init__(request, key, engine.limits)
        self.engine = engine
        self.lock = threading.Lock()
        self.waiters: deque[_Waiter] = deque()
        self.live: set[_Connection] = set()
        """Every open connection, in use or idle: a response dropped half-read must not take
        its connection down with it before ``_ResponseStream.__del__`` has closed it."""
        self.dropped: deque[_Connection] = deque()
        """Connections of responses dropped half-read (``_ResponseStream.__del__``), whose slots
        are freed under the lock at the next acquire or release."""

    def _reap_dropped(self) -> None:
        """Free the slots of dropped connections; the caller holds ``lock``."""
        dropped = self.dropped
        while dropped:
            self.drop(dropped.popleft())

    def acquire(self, request: httpx.Request, t: dict[str, float | None]) -> _Connection:
        while True:
            waiter = None
            with self.lock:
                if self.dropped:
                    self._reap_dropped()
                conn = self.take_idle()
                if conn is None and not self.reserve():
                    waiter = _Waiter()
                    self.waiters.append(waiter)
            if waiter is not None:
                conn = self._wait(waiter, request, t.get("pool"))
                if conn is not None and conn.alive():
                    return conn
                if conn is not None:
                    conn.abort()  # dead on arrival: keep its slot for a fresh connection
                return self._connect(request, t.get("connect"))
            if conn is None:
                return self._connect(request, t.get("connect"))
            if conn.alive():
                return conn
            with self.lock:
                self.drop(conn)  # closed by the server while idle: free its slot, retry

    def _wait(
        self, waiter: _Waiter, request: httpx.Request, limit: float | None
    ) -> _Connection | None:
        if not waiter.lock.acquire(timeout=-1 if limit is None else limit):
            with self.lock:
                if not waiter.done:
                    self.waiters.remove(waiter)
                    raise httpx.PoolTimeout(
                        "Timed out waiting for a free connection.", request=request
                    )
        return waiter.value

    def _connect(self, request: httpx.Request, limit: float | None) -> _Connection:
        sock = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=limit)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = self.connect
            if peer is not None:
                ctx = peer.context()  # the first certificate may still be on its way: waits
                tls = ctx.wrap_socket(sock, server_hostname=peer.server_hostname)
                sock = tls
                reason = peer.check(tls.getpeercert())
                if reason is not None:
                    raise connect_refused(reason, request)
            elif self.tls:
                ctx = self.engine.ssl_context()
                sock = ctx.wrap_socket(sock, server_hostname=self.server_hostname)
            conn = _Connection(self, sock, limit)
            self.live.add(conn)
            return conn
        except BaseException as exc:
            if sock is not None:
                sock.close()
            with self.lock:
                self.free_slot()
            if isinstance(exc, OSError):  # includes ssl.SSLError and TimeoutError
                raise connect_error(exc, request) from exc
            raise

    def hand(self, value: _Connection | None) -> bool:
        if not self.waiters:
            return False
        waiter = self.waiters.popleft()
        waiter.value = value
        waiter.done = True
        waiter.lock.release()
        return True

    def release(self, conn: _Connection, reuse: bool) -> None:
        conn.hard = None
        with self.lock:
            super().release(conn, reuse)
            if self.dropped:
                self._reap_dropped()

    def forget_inherited(self) -> None:
        # The lock may have been held by a parent thread at the fork: never take it here.
        for conn in list(self.live):
            conn.abort()
        self.idle.clear()
        self.waiters.clear()
        self.dropped.clear()

    def dropped_unread(self, conn: _Connection) -> None:
        """A response was dropped half-read, from ``__del__`` (any thread, any moment: perhaps
        inside this pool's own locked section, so it must not block on the lock)."""
        conn.abort()  # the socket goes now; never reused
        self.dropped.append(conn)
        if self.lock.acquire(blocking=False):
            try:
                self._reap_dropped()
            finally:
                self.lock.release()


class _ResponseStream(httpx.SyncByteStream):
    """Yields body chunks as they arrive; closing returns the connection or kills it."""

    def __init__(
        self,
        conn: _Connection,
        parser: ResponseParser,
        request: httpx.Request,
        limit: float | None,
    ) -> None:
        self._conn: _Connection | None = conn
        self._parser = parser
        self._request = request
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        parser = self._parser
        chunks = parser.chunks
        while self._conn is not None:
            if chunks:
                yield parser.take()
            elif parser.complete:
                return
            else:
                try:
                    self._conn.receive(parser, self._request, self._limit)
                except BaseException:
                    self.close()
                    raise

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            parser = self._parser
            conn.pool.release(conn, parser.complete and parser.keep_alive)

    def __del__(self) -> None:
        # Dropped without being closed (a caller abandoned a half-read response): the
        # connection can never be reused, and until it is released it holds one of the pool's
        # slots and an open socket.
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.pool.dropped_unread(conn)


class SyncEngine(EngineBase["_Pool"], httpx.BaseTransport):
    """HTTP/1.1 keep-alive transport for mesh endpoints; limits apply per origin.

    Reads ``request.extensions["timeout"]`` (as set by httpx),
    ``request.extensions["sni_hostname"]`` (TLS server name, the mesh's service name) and the
    attempt's deadline (``extensions.DEADLINE``), which bounds every read and write of the
    exchange however the server paces its bytes.
    """

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = origin_key(request)
        pool = self._pools.get(key)
        if pool is None:  # setdefault is atomic; a losing thread's empty pool is dropped
            pool = self._pools.setdefault(key, _Pool(self, request, key))
        head = encode_head(request)
        t = timeouts(request)
        conn = pool.acquire(request, t)
        conn.hard = request.extensions.get(DEADLINE)
        parser = conn.parser
        parser.start(request, request.method == "HEAD")
        limit = t.get("read")
        try:
            try:
                _send(conn, request, head, t.get("write"))
            except httpx.WriteError as exc:
                # The server may have answered (e.g. 413) and closed before taking the
                # whole body; report its answer if there is one, else the write error.
                try:
                    while not parser.headers_done:
                        conn.receive(parser, request, limit)
                except httpx.TransportError:
                    raise exc from None
                parser.keep_alive = False
            while not parser.headers_done:
                conn.receive(parser, request, limit)
        except BaseException:
            pool.release(conn, False)
            raise
        return httpx.Response(
            parser.status_code,
            headers=parser.headers,
            stream=_ResponseStream(conn, parser, request, limit),
            extensions={"http_version": parser.http_version, "reason_phrase": parser.reason},
        )

    def close(self) -> None:
        """Close every pooled connection; in-flight ones close when their response does."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            with pool.lock:
                pool.closed = True
                pool.close_idle()


def _send(conn: _Connection, request: httpx.Request, head: bytes, limit: float | None) -> None:
    """Write the request, streaming (and chunk-framing) a body httpx does not hold."""
    body = in_memory_body(request)
    if body is not None:
        conn.write(head + body if body else head, request, limit)
        return
    stream = request.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise RuntimeError("Attempted to send an async request body with a SyncEngine.")
    conn.write(head, request, limit)
    chunked = is_chunked(request)
    for chunk in stream:
        if chunk:
            conn.write(frame_chunk(chunk) if chunked else chunk, request, limit)
    if chunked:
        conn.write(LAST_CHUNK, request, limit)
