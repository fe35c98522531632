"""The attempt's hard bound over httpx's own transport: every socket wait clamped to it.

meshlib's engine bounds an attempt itself (``extensions.DEADLINE``). httpx's own transport
(``MESH_ENGINE=httpx``, a transport passed in) only has per-read timeouts, which restart on
every byte, so a server dripping its head one byte at a time outlives any deadline. The
pipeline cannot interrupt a blocking read from outside, so the bound is enforced where the
waiting happens: httpx's connection pool gets a network backend whose streams clamp each
read, write and connect to the time left before the bound of the attempt in progress, which
the pipeline publishes in a context variable around the send and the body read. Past the bound
each wait gets a microsecond, so httpx raises its own ``ReadTimeout`` (or ``WriteTimeout``,
``ConnectTimeout``) and the call turns it into ``DeadlineExceeded`` as for the engine.

The backend wraps whatever httpcore backend the pool had, by duck typing (this module does
not import httpcore), and a pool of another shape is left as it is.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import httpx

from meshlib.extensions import DEADLINE
from meshlib.otel import gate

__all__ = ["HttpxAttempt", "bound_pool"]

_HARD: contextvars.ContextVar[float | None] = contextvars.ContextVar("mesh_hard", default=None)
_LEAST = 1e-6  # what a wait past the bound gets: enough to raise httpx's own timeout


def _clamp(timeout: float | None) -> float | None:
    hard = _HARD.get()
    if hard is None:
        return timeout
    left = max(hard - time.monotonic(), _LEAST)
    return left if timeout is None or left < timeout else timeout


class _Stream:
    """A network stream whose waits end at the attempt's bound (sync and async alike)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> Any:
        return self._inner.read(max_bytes, _clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> Any:
        return self._inner.write(buffer, _clamp(timeout))

    def close(self) -> Any:
        return self._inner.close()

    def aclose(self) -> Any:
        return self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def start_tls(self, ssl_context: Any, server_hostname: Any = None, timeout: Any = None) -> Any:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))


class _AsyncStream(_Stream):
    __slots__ = ()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: Any = None,
        timeout: Any = None,  # noqa: ASYNC109 - httpcore's signature
    ) -> Any:
        return _AsyncStream(
            await self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout))
        )


class _Backend:
    """The pool's network backend, its connects and streams clamped to the bound."""

    __slots__ = ("_inner", "_stream")

    def __init__(self, inner: Any, stream: type[_Stream]) -> None:
        self._inner = inner
        self._stream = stream

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kw: Any) -> Any:
        return self._stream(self._inner.connect_tcp(host, port, _clamp(timeout), **kw))

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kw: Any) -> Any:
        return self._stream(self._inner.connect_unix_socket(path, _clamp(timeout), **kw))

    def sleep(self, seconds: float) -> Any:
        return self._inner.sleep(seconds)


class _AsyncBackend(_Backend):
    __slots__ = ()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        **kw: Any,
    ) -> Any:
        return self._stream(await self._inner.connect_tcp(host, port, _clamp(timeout), **kw))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        **kw: Any,
    ) -> Any:
        return self._stream(await self._inner.connect_unix_socket(path, _clamp(timeout), **kw))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def bound_pool(transport: Any) -> None:
    """Give httpx's own ``transport`` a pool whose waits honour the attempt's bound."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None or isinstance(backend, _Backend):
        return
    if isinstance(transport, httpx.AsyncHTTPTransport):
        pool._network_backend = _AsyncBackend(backend, _AsyncStream)  # type: ignore[union-attr]
    else:
        pool._network_backend = _Backend(backend, _Stream)  # type: ignore[union-attr]


class HttpxAttempt:
    """Around each send and body read over httpx's own transport: httpx's instrumentation
    suppressed (meshlib's attempt span is the CLIENT span) and the attempt's bound in force.

    Reusable, one attempt after another, never nested."""

    __slots__ = ("_request", "_suppress", "_token")

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        # An instrumentation imports OpenTelemetry: without it there is nothing to suppress.
        self._suppress: Any = None
        if gate.in_use():
            from meshlib.otel.tracing import SuppressedHTTP

            self._suppress = SuppressedHTTP()
        self._token: contextvars.Token[float | None] | None = None

    def __enter__(self) -> None:
        if self._suppress is not None:
            self._suppress.__enter__()
        # The request's extensions are the current attempt's (each attempt gets its own).
        self._token = _HARD.set(self._request.extensions.get(DEADLINE))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _HARD.reset(self._token)
            self._token = None
        if self._suppress is not None:
            self._suppress.__exit__(*exc)
