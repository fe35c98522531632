"""The response-stream wrapper ends its attempt exactly as the body ends: read to EOF, closed
early, failed mid-body, past the deadline, or cancelled."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from meshlib.attempt import TrackedAsyncStream


class _Attempt:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def finish(self) -> None:
        self.ended.append("finish")

    def fail(self) -> None:
        self.ended.append("fail")

    def cancel(self) -> None:
        self.ended.append("cancel")


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
