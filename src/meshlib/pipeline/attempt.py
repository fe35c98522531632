"""One attempt's bookkeeping, shared by both drivers: load in flight, timing and the verdict.

An attempt starts when the request is handed to the inner transport and ends when the response
*stream closes* (or the send fails), not when headers arrive: a response whose body is still
streaming still loads the endpoint, which is what the balancer needs to know (Finagle and
linkerd2-proxy count pending requests until end of stream for the same reason). The round-trip
time folded into Peak-EWMA is measured to the same moment.

The response streams are wrapped so that closing, exhausting or abandoning them reports exactly
once; a caller that cancels reports ``cancel`` instead, which releases the slot without charging
the endpoint's health.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from meshlib.balance.balancer import EndpointState
from meshlib.classify import FAILURE, ResponseClass
from meshlib.clock import Clock

if TYPE_CHECKING:  # asyncio is imported where it runs: a sync service never needs it
    import asyncio

__all__ = ["Attempt", "TrackedAsyncStream", "TrackedSyncStream", "endpoint_url"]


_URLS: dict[tuple[object, str, int], httpx.URL] = {}
_URL_LIMIT = 4096


def endpoint_url(url: httpx.URL, host: str, port: int) -> httpx.URL:
    """``url`` with its host and port replaced, without re-parsing it.

    ``URL.copy_with`` re-validates the whole URL (about 50 us); the parsed form httpx keeps is a
    named tuple, so replacing two fields is enough. URLs are immutable, so the result is kept
    per (URL, endpoint) and reused: building even that tuple costs more than finding it again.
    Falls back to ``copy_with`` if httpx's internals ever change shape.
    """
    try:
        parsed = url._uri_reference
    except AttributeError:  # pragma: no cover - only on an httpx with other internals
        return url.copy_with(host=host, port=port)
    key = (parsed, host, port)
    new = _URLS.get(key)
    if new is None:
        new = httpx.URL.__new__(httpx.URL)
        new._uri_reference = parsed._replace(host=host, port=port)
        if len(_URLS) >= _URL_LIMIT:
            _URLS.clear()
        _URLS[key] = new
    return new


class Attempt:
    """The in-flight record of one attempt on one endpoint."""

    __slots__ = (
        "_clock",
        "_done",
        "after",
        "error",
        "headers",
        "klass",
        "number",
        "observer",
        "probe",
        "span",
        "started",
        "state",
        "status",
    )

    def __init__(
        self, state: EndpointState, clock: Clock, number: int = 0, now: float | None = None
    ) -> None:
        self.state = state
        self.number = number
        self._clock = clock
        self._done = False
        self.klass: ResponseClass | None = None
        self.after: Callable[[], None] | None = None
        """Runs once when the attempt ends (the call's concurrency slot is released here)."""
        self.observer: Callable[[Attempt, float | None], None] | None = None
        """Telemetry hook: called once at the end with the round-trip time (None if cancelled)."""
        self.span: Any = None
        """The attempt's CLIENT span while it is open (telemetry's; None without tracing)."""
        self.status: int | None = None
        self.error: str | None = None
        self.headers: list[tuple[str, str]] = []
        """Headers for this attempt only (deadline, trace context): the caller's request is
        never changed, so nothing mesh-specific follows a redirect out of the mesh."""
        health = state.health
        # The balancer's admit() just claimed the probe if the endpoint is probing.
        self.probe = health is not None and getattr(health, "state", "alive") == "probing"
        state.metric.start()
        self.started = clock.now() if now is None else now

    def elapsed(self) -> float:
        return self._clock.now() - self.started

    @property
    def done(self) -> bool:
        """True once the attempt has finished, failed or been cancelled."""
        return self._done

    def finish(self) -> None:
        """The response stream closed: fold time and verdict into the endpoint's load and health."""
        if self._done:
            return
        self._done = True
        now = self._clock.now()
        klass = self.klass
        failed = klass is not None and klass.failure
        state = self.state
        rtt = now - self.started
        state.metric.finish(now, rtt, failed=failed)
        state.stats.record(now, rtt, failed=failed)
        if state.health is not None and klass is not None:
            state.health.record(now, failure=failed, probe=self.probe)
        if self.observer is not None:
            self.observer(self, rtt)
        if self.after is not None:
            self.after()

    def fail(self) -> None:
        """The body failed mid-stream (reset, timeout): that counts against the endpoint."""
        self.klass = FAILURE
        self.finish()

    def cancel(self) -> None:
        """The caller gave up: release the in-flight slot and any probe, charge nothing."""
        if self._done:
            return
        self._done = True
        self.state.metric.cancel()
        if self.probe and self.state.health is not None:
            self.state.health.release()
        if self.observer is not None:
            self.observer(self, None)
        if self.after is not None:
            self.after()


Expiry = Callable[[], "Exception | None"]
"""Returns the error to raise when the call's deadline has passed while a body streams."""


def _end_dropped(attempt: Attempt, loop: asyncio.AbstractEventLoop | None) -> None:
    """End an attempt whose body was dropped unfinished, on its event loop (from ``__del__``,
    which may run anywhere), as asyncio's own async-generator finaliser would."""
    if attempt.done:
        return
    if loop is not None and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(attempt.finish)
            return
        except RuntimeError:  # closed in between
            pass
    attempt.finish()


class TrackedAsyncStream(httpx.AsyncByteStream):
    """Wraps a response stream so its end (read to EOF, closed, failed or dropped) ends the
    attempt.

    Iteration is a plain ``__anext__`` object rather than an async generator: asyncio registers
    every async generator in a weak set and runs hooks on its first and last step, which cost
    more than the rest of this wrapper per response. What the generator gave for free, ending
    the attempt when a caller stops reading half-way and drops the response without closing it,
    the iterator's ``__del__`` does: it is referenced only by the loop reading it, so it goes as
    soon as that loop is abandoned, while the response itself sits in a reference cycle (httpx's
    ``BoundAsyncStream``) until the cyclic collector runs. Otherwise the endpoint would count
    the request as in flight and a concurrency slot would stay taken until then.
    """

    __slots__ = ("_attempt", "_expired", "_inner", "_loop")

    def __init__(
        self, inner: httpx.AsyncByteStream, attempt: Attempt, expired: Expiry | None = None
    ) -> None:
        self._inner = inner
        self._attempt = attempt
        self._expired = expired
        import asyncio  # loaded: async streams are built on an event loop

        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _TrackedIterator(self)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._attempt.finish()

    async def read_all(self) -> bytes:
        """Every body piece, through the same iterator as ``async for`` (so the attempt ends
        the same way on EOF, an error, a cancel or the deadline), as one bytes object."""
        it = _TrackedIterator(self)
        pieces: list[bytes] = []
        try:
            while True:
                pieces.append(await it.__anext__())
        except StopAsyncIteration:
            pass
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __del__(self) -> None:  # never iterated, never closed
        _end_dropped(self._attempt, self._loop)


async def read_whole(response: httpx.Response) -> None:
    """``response.aread()``, without httpx's layers over the stream.

    ``aread`` walks two async generators, a decoder, two byte chunkers and three context
    managers for a body that is usually one piece: about 12 us a response
    (benchmarks/README.md). When the body carries no ``Content-Encoding`` (so the content is
    the body itself), this reads it through the tracked stream's own iterator and leaves the
    response exactly as ``aread`` would: content set, stream consumed and closed, bytes
    counted, the attempt ended and the connection back in its pool. Encoded bodies go through
    ``aread``, which decodes them.
    """
    stream = response.stream
    if not isinstance(stream, TrackedAsyncStream) or "content-encoding" in response.headers:
        await response.aread()
        return
    response.is_stream_consumed = True
    body = await stream.read_all()
    response._content = body
    response._num_bytes_downloaded = len(body)
    response.is_closed = True
    await stream.aclose()


class _TrackedIterator:
    """One pass over a ``TrackedAsyncStream``'s body."""

    __slots__ = ("_it", "_owner")

    def __init__(self, owner: TrackedAsyncStream) -> None:
        self._owner = owner
        self._it = owner._inner.__aiter__()

    def __aiter__(self) -> _TrackedIterator:
        return self

    async def __anext__(self) -> bytes:
        attempt = self._owner._attempt
        if attempt.done:  # ended by EOF, an error, the deadline or aclose(): read no further
            raise StopAsyncIteration
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            attempt.finish()
            raise
        except Exception:
            attempt.fail()
            raise
        except BaseException:  # cancelled (or interrupted): the caller gave up, not the endpoint
            attempt.cancel()
            raise
        expired = self._owner._expired
        if expired is not None and (err := expired()) is not None:
            attempt.fail()
            raise err
        return chunk

    def __del__(self) -> None:  # the reading loop was abandoned part-way
        _end_dropped(self._owner._attempt, self._owner._loop)


class TrackedSyncStream(httpx.SyncByteStream):
    """The sync twin of ``TrackedAsyncStream``."""

    __slots__ = ("_attempt", "_expired", "_inner")

    def __init__(
        self, inner: httpx.SyncByteStream, attempt: Attempt, expired: Expiry | None = None
    ) -> None:
        self._inner = inner
        self._attempt = attempt
        self._expired = expired

    def __iter__(self) -> Iterator[bytes]:
        expired = self._expired
        try:
            for chunk in self._inner:
                if expired is not None and (err := expired()) is not None:
                    raise err
                yield chunk
        except GeneratorExit:
            self._attempt.finish()
            raise
        except BaseException:
            self._attempt.fail()
            raise
        self._attempt.finish()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._attempt.finish()


def read_whole_sync(response: httpx.Response) -> None:
    """The blocking twin of ``read_whole``: ``response.read()`` without httpx's layers over
    the stream, for a body with no ``Content-Encoding``."""
    stream = response.stream
    if not isinstance(stream, TrackedSyncStream) or "content-encoding" in response.headers:
        response.read()
        return
    response.is_stream_consumed = True
    body = b"".join(stream)
    response._content = body
    response._num_bytes_downloaded = len(body)
    response.is_closed = True
    stream.close()
