"""One keep-alive HTTP/1.1 connection of the asyncio engine, and the response stream over it.

``Connection`` is an ``asyncio.Protocol``: loop callbacks only record state and wake one waiter,
and response bytes are parsed in ``data_received`` by the shared ``ResponseParser``.
``ResponseStream`` yields a body as it arrives and returns the connection to its pool (or kills
it) when closed. The pool and the engine that hand these out are in ``aio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Protocol

import httpx

from .forking import keep
from .http11 import (
    LAST_CHUNK,
    frame_chunk,
    is_chunked,
    read_error,
    write_error,
)
from .parser import ResponseParser

__all__ = [
    "HIGH_WATER",
    "NEVER",
    "SLACK",
    "TIMEOUT",
    "Connection",
    "PoolLike",
    "ResponseStream",
    "Timeouts",
    "check",
    "expire",
    "send_stream",
]


class PoolLike(Protocol):
    """What a connection needs of its pool (``aio._Pool``)."""

    loop: asyncio.AbstractEventLoop

    def release(self, conn: Connection, reuse: bool) -> None: ...

    def discard(self, conn: Connection) -> None: ...


HIGH_WATER = 65536  # pause reading once this much unread body is buffered
TIMEOUT: Any = object()  # result of a wait whose timer fired
Timeouts = dict[str, float | None]
NEVER = float("inf")
SLACK = 0.001  # a timer firing this close to the deadline counts as expired


def expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(TIMEOUT)


class Connection(asyncio.Protocol):
    """One keep-alive connection; loop callbacks only record state and wake ``waiter``.

    A single waiter slot serves every wait (headers, body, drain) because a connection
    runs one request at a time; waiting code re-checks state in a loop after each wake.
    """

    def __init__(self, pool: PoolLike) -> None:
        self._loop = pool.loop
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None  # set while an exchange is active
        self.spare = ResponseParser()
        self.waiter: asyncio.Future[Any] | None = None
        self.deadline = NEVER  # when the current wait times out
        self.hard = NEVER  # the exchange's deadline (extensions.DEADLINE): no wait outlives it
        self.timer: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None
        self.lost = False  # peer closed or transport gone: never reuse
        self.idle = False
        self.idle_since = 0.0
        self.read_paused = False
        self.write_paused = False

    # -- asyncio.Protocol callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes on an idle connection: closed or garbage
            self.abort()
            self._gone(None)
            return
        try:
            parser.feed(data)
        except httpx.HTTPError as exc:
            self.error = exc
            self.abort()
        else:
            if parser.buffered > HIGH_WATER and not self.read_paused and self.transport:
                self.read_paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._gone(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(exc)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # -- helpers used by the pool and the request path ----------------------------------

    def _gone(self, exc: BaseException | None) -> None:
        self.lost = True
        parser = self.parser
        if parser is not None and not parser.complete and self.error is None:
            if exc is not None:
                self.error = exc
            else:
                try:
                    parser.feed_eof()
                except httpx.HTTPError as err:
                    self.error = err
        self.pool.discard(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, limit: float | None) -> bool:
        """Wait for any event on this connection; True means the timeout expired.

        The timeout is a ``loop.call_at`` handle that fails the waiter, but it is armed
        lazily: one handle per connection is kept while it fires no later than the current
        deadline, and on firing it re-arms for a later deadline instead of expiring. With
        a fixed read timeout that is one handle per connection per timeout period rather
        than one call_later/cancel per request, each of which leaves a cancelled handle in
        the loop's heap (measured at ~20% of the engine's own per-request CPU).
        """
        loop = self._loop
        fut = self.waiter = loop.create_future()
        hard = self.hard
        if limit is not None or hard != NEVER:
            deadline = NEVER if limit is None else loop.time() + limit
            if hard < deadline:
                deadline = hard
            self.deadline = deadline
            timer = self.timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self.timer = loop.call_at(deadline, self._on_timer)
        try:
            return await fut is TIMEOUT
        finally:
            self.waiter = None
            self.deadline = NEVER

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or self.deadline == NEVER:
            return  # nobody is waiting: stay disarmed until the next timed wait
        if self.deadline - self._loop.time() <= SLACK:
            if not waiter.done():
                waiter.set_result(TIMEOUT)
        else:
            self.timer = self._loop.call_at(self.deadline, self._on_timer)

    async def drain(self, request: httpx.Request, limit: float | None) -> None:
        """Honour write flow control; stop early if the server answered or closed.

        If the server answers (e.g. 413) or closes before taking the whole request, the
        read phase reports what it said and the half-sent connection is never reused.
        """
        parser = self.parser
        assert parser is not None
        while self.write_paused and not self.lost and not parser.headers_done:
            started = self._loop.time()
            timed_out = await self.wait(limit)
            # httpx's write timeout bounds each wait for the socket to take more bytes, even
            # when the peer reads again just after it passed (as httpcore measures it).
            if timed_out or (limit is not None and self._loop.time() - started > limit):
                raise httpx.WriteTimeout("Timed out sending the request.", request=request)
        if self.write_paused or self.lost:
            parser.keep_alive = False
            if self.error is not None and not parser.started:
                raise write_error(self.error, request)

    async def write(self, data: bytes, request: httpx.Request, limit: float | None) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)
        if self.write_paused or self.lost:
            await self.drain(request, limit)

    def finish(self, reuse: bool) -> None:
        """Hand the connection back to its pool once the exchange is over."""
        self.parser = None
        self.hard = NEVER
        self.pool.release(self, reuse and not self.lost)

    def forget_socket(self) -> None:
        """In a forked child: close this process's copy of the socket, and nothing else (the
        transport belongs to the parent's event loop, whose copy here never runs again)."""
        self.lost = True
        transport, self.transport = self.transport, None
        if transport is None:
            return
        keep(transport)  # its finalizer must never run here: it would touch the parent's loop
        # asyncio's socket transports keep the socket as ``_sock``; a TLS transport's socket is
        # reached through its extra info, whose wrapper keeps it the same way.
        sock = getattr(transport, "_sock", None)
        if not isinstance(sock, socket.socket):
            sock = getattr(transport.get_extra_info("socket"), "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.close()

    def abort(self) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()


class ResponseStream(httpx.AsyncByteStream):
    """Yields body chunks as they arrive; closing returns the connection or kills it."""

    def __init__(self, conn: Connection, request: httpx.Request, timeout: float | None):
        self._conn: Connection | None = conn
        self._request = request
        self._timeout = timeout

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        parser = conn.parser
        assert parser is not None
        while True:
            if parser.chunks:
                data = parser.take()
                if conn.read_paused and not conn.lost and conn.transport is not None:
                    conn.read_paused = False
                    conn.transport.resume_reading()
                return data
            if parser.complete:
                raise StopAsyncIteration
            try:
                check(conn, self._request)
                timed_out = await conn.wait(self._timeout)
            except BaseException:
                self._kill()
                raise
            if timed_out:
                self._kill()
                raise httpx.ReadTimeout("Timed out reading the response.", request=self._request)

    def _kill(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish(False)

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            parser = conn.parser
            assert parser is not None
            conn.finish(parser.complete and parser.keep_alive)

    def __del__(self) -> None:
        # Dropped without being closed (a caller abandoned a half-read response): the
        # connection can never be reused, and until it is released it holds one of the pool's
        # slots and an open socket. Release it on its loop, since this may run anywhere.
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        # A closed loop raises RuntimeError: its transports are gone with it.
        with contextlib.suppress(RuntimeError):
            conn.pool.loop.call_soon_threadsafe(conn.finish, False)


def check(conn: Connection, request: httpx.Request) -> None:
    """Raise why no (more) response bytes can arrive, if that is the case."""
    if conn.error is not None or conn.lost:
        raise read_error(conn.error or OSError("Connection lost."), request)


async def send_stream(
    conn: Connection, request: httpx.Request, head: bytes, limit: float | None
) -> None:
    """Write head and a streamed body (chunk-framed if the headers say so)."""
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise RuntimeError("Attempted to send a sync request body with an AsyncEngine.")
    await conn.write(head, request, limit)
    parser = conn.parser
    assert parser is not None
    chunked = is_chunked(request)
    async for chunk in stream:
        if conn.lost or parser.headers_done:
            parser.keep_alive = False
            return
        if chunk:
            await conn.write(frame_chunk(chunk) if chunked else chunk, request, limit)
    if chunked:
        await conn.write(LAST_CHUNK, request, limit)
