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

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx

from meshlib.balancer import EndpointState
from meshlib.classify import FAILURE, ResponseClass
from meshlib.clock import Clock

__all__ = ["Attempt", "TrackedAsyncStream", "TrackedSyncStream", "endpoint_url"]


def endpoint_url(url: httpx.URL, host: str, port: int) -> httpx.URL:
    """``url`` with its host and port replaced, without re-parsing it.

    ``URL.copy_with`` re-validates the whole URL (about 50 us); the parsed form httpx keeps is a
    named tuple, so replacing two fields is enough. Falls back to ``copy_with`` if httpx's
    internals ever change shape.
    """
    try:
        ref = url._uri_reference._replace(host=host, port=port)
    except AttributeError:  # pragma: no cover - only on an httpx with other internals
        return url.copy_with(host=host, port=port)
    new = httpx.URL.__new__(httpx.URL)
    new._uri_reference = ref
    return new


class Attempt:
    """The in-flight record of one attempt on one endpoint."""

    __slots__ = ("_clock", "_done", "klass", "started", "state")

    def __init__(self, state: EndpointState, clock: Clock) -> None:
        self.state = state
        self._clock = clock
        self._done = False
        self.klass: ResponseClass | None = None
        state.metric.start()
        self.started = clock.now()

    def finish(self) -> None:
        """The response stream closed: fold the time and the verdict into the endpoint's load."""
        if self._done:
            return
        self._done = True
        now = self._clock.now()
        klass = self.klass
        self.state.metric.finish(
            now, now - self.started, failed=klass is not None and klass.failure
        )

    def fail(self) -> None:
        """The body failed mid-stream (reset, timeout): that counts against the endpoint."""
        self.klass = FAILURE
        self.finish()

    def cancel(self) -> None:
        """The caller gave up: release the in-flight slot, charge nothing."""
        if self._done:
            return
        self._done = True
        self.state.metric.cancel()


class TrackedAsyncStream(httpx.AsyncByteStream):
    """Wraps a response stream so its end (read to EOF, closed, or failed) ends the attempt."""

    __slots__ = ("_attempt", "_inner")

    def __init__(self, inner: httpx.AsyncByteStream, attempt: Attempt) -> None:
        self._inner = inner
        self._attempt = attempt

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except asyncio.CancelledError:
            self._attempt.cancel()
            raise
        except GeneratorExit:
            self._attempt.finish()
            raise
        except BaseException:
            self._attempt.fail()
            raise
        self._attempt.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._attempt.finish()


class TrackedSyncStream(httpx.SyncByteStream):
    """The sync twin of ``TrackedAsyncStream``."""

    __slots__ = ("_attempt", "_inner")

    def __init__(self, inner: httpx.SyncByteStream, attempt: Attempt) -> None:
        self._inner = inner
        self._attempt = attempt

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
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
