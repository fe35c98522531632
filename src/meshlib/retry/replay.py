"""Making a request body replayable, so an idempotent call can be retried after it was sent.

In-memory bodies replay for free. A streamed body is buffered before the first attempt when the
call might retry, up to ``max_replay_bytes`` (64 KiB, Linkerd 2's limit): a body that fits is
turned into a length-framed in-memory body; a larger one is sent once, as a one-shot stream made
of the chunks already read followed by the rest, and the call is marked not replayable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

import httpx

__all__ = ["buffer_async", "buffer_sync"]


def _use_buffer(request: httpx.Request, chunks: list[bytes]) -> bool:
    """The body fitted under the replay cap: make it a replayable, length-framed body."""
    body = b"".join(chunks)
    request.stream = httpx.ByteStream(body)
    request.headers.pop("transfer-encoding", None)
    request.headers["content-length"] = str(len(body))
    return True


class _PrefixedAsync(httpx.AsyncByteStream):
    """A one-shot body: the chunks already read, then the rest of the original stream."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk


class _PrefixedSync(httpx.SyncByteStream):
    """Sync twin of ``_PrefixedAsync``."""

    def __init__(self, head: list[bytes], rest: Iterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._rest


async def buffer_async(request: httpx.Request, cap: int) -> bool:
    """Read up to ``cap`` bytes of an async body; True (replayable) if it all fitted."""
    chunks: list[bytes] = []
    size = 0
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    it = stream.__aiter__()
    async for chunk in it:
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            request.stream = _PrefixedAsync(chunks, it)
            return False
    return _use_buffer(request, chunks)


def buffer_sync(request: httpx.Request, cap: int) -> bool:
    """Blocking twin of ``buffer_async``."""
    chunks: list[bytes] = []
    size = 0
    stream = request.stream
    assert isinstance(stream, Iterable)
    it = iter(stream)
    for chunk in it:
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            request.stream = _PrefixedSync(chunks, it)
            return False
    return _use_buffer(request, chunks)
