"""The response-stream wrapper ends its attempt exactly as the body ends: read to EOF, closed
early, failed mid-body, past the deadline, cancelled, or dropped half-read."""

import asyncio
import gc
from collections.abc import AsyncIterator

import httpx
import pytest

from meshlib.pipeline.attempt import TrackedAsyncStream


class _Attempt:
    def __init__(self) -> None:
        self.ended: list[str] = []
        self.repeated: list[str] = []

    @property
    def done(self) -> bool:
        return bool(self.ended)

    # Like ``Attempt``: the first end counts, later ones are no-ops (but are recorded apart).
    def _end(self, how: str) -> None:
        if not self.ended:
            self.ended.append(how)
        else:
            self.repeated.append(how)

    def finish(self) -> None:
        self._end("finish")

    def fail(self) -> None:
        self._end("fail")

    def cancel(self) -> None:
        self._end("cancel")


class _Body(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], error: BaseException | None = None) -> None:
        self._chunks = chunks
        self._error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        self.closed = True


async def test_read_to_the_end_finishes() -> None:
    attempt = _Attempt()
    stream = TrackedAsyncStream(_Body([b"a", b"b"]), attempt)  # type: ignore[arg-type]
    assert [c async for c in stream] == [b"a", b"b"]
    assert attempt.ended == ["finish"]


async def test_error_mid_body_fails_the_attempt() -> None:
    attempt = _Attempt()
    body = _Body([b"a"], httpx.ReadError("reset"))
    stream = TrackedAsyncStream(body, attempt)  # type: ignore[arg-type]
    with pytest.raises(httpx.ReadError):
        async for _ in stream:
            pass
    assert attempt.ended == ["fail"]


async def test_deadline_passed_mid_body_fails_and_raises() -> None:
    attempt = _Attempt()
    late = httpx.ReadTimeout("deadline")
    stream = TrackedAsyncStream(_Body([b"a", b"b"]), attempt, lambda: late)  # type: ignore[arg-type]
    with pytest.raises(httpx.ReadTimeout):
        async for _ in stream:
            pass
    assert attempt.ended == ["fail"]


async def test_cancelled_read_cancels_the_attempt() -> None:
    attempt = _Attempt()
    stream = TrackedAsyncStream(_Body([b"a"], asyncio.CancelledError()), attempt)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        async for _ in stream:
            pass
    assert attempt.ended == ["cancel"]


async def test_closed_early_finishes_and_closes_the_inner_stream() -> None:
    attempt = _Attempt()
    body = _Body([b"a", b"b"])
    stream = TrackedAsyncStream(body, attempt)  # type: ignore[arg-type]
    async for _ in stream:
        break
    assert attempt.ended == []
    await stream.aclose()
    assert body.closed
    assert attempt.ended == ["finish"]


async def test_a_stream_dropped_half_read_ends_its_attempt_on_the_loop() -> None:
    attempt = _Attempt()
    stream = TrackedAsyncStream(_Body([b"a", b"b"]), attempt)  # type: ignore[arg-type]
    async for _ in stream:
        break
    del stream
    gc.collect()
    assert attempt.ended == []  # scheduled on the event loop, as asyncio's own finaliser does
    await asyncio.sleep(0)
    assert attempt.ended == ["finish"]


async def test_after_an_error_the_stream_reads_no_further() -> None:
    attempt = _Attempt()
    late = httpx.ReadTimeout("deadline")
    body = _Body([b"a", b"b", b"c"])
    stream = TrackedAsyncStream(body, attempt, lambda: late)  # type: ignore[arg-type]
    it = stream.__aiter__()
    with pytest.raises(httpx.ReadTimeout):
        await it.__anext__()
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert attempt.ended == ["fail"]
    assert attempt.repeated == []
