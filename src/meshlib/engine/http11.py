"""The I/O-free HTTP/1.1 core shared by the asyncio and the blocking engine drivers.

Both drivers (``aio`` and ``sync``) move the same bytes; only *how* they wait differs.
Everything that does not wait lives here so it is written once: serialising the request
head, framing request bodies, mapping low-level failures onto httpx's exception classes, and
the per-origin pool bookkeeping and constructor settings both engines have in common. Turning
response bytes into status, headers and body chunks is ``parser``'s.

The exception mapping is part of the contract, not a nicety: the mesh's retry layer
decides "might the upstream have seen this request?" from the exception class alone
(``ConnectError``/``PoolTimeout`` = never sent, ``Write*`` = maybe partially sent,
``Read*``/``RemoteProtocolError`` = sent), so every path raises exactly one httpx class
with ``request=`` set and never a raw ``OSError``, ``ssl.SSLError`` or parser error.
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

import httpx

from meshlib.extensions import ATTEMPT_HEADERS, CONNECT, ConnectPeer

from .forking import track

__all__ = [
    "DEFAULT_LIMITS",
    "LAST_CHUNK",
    "EngineBase",
    "OriginKey",
    "PoolBase",
    "connect_error",
    "encode_head",
    "error_message",
    "frame_chunk",
    "in_memory_body",
    "is_chunked",
    "origin_key",
    "read_error",
    "timeouts",
    "write_error",
]

#: httpx's own defaults, but applied per origin (per mesh endpoint), not per client.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

#: Terminator of a chunked request body (zero-size chunk, no trailers).
LAST_CHUNK = b"0\r\n\r\n"

_NO_TIMEOUTS: dict[str, float | None] = {}


def timeouts(request: httpx.Request) -> dict[str, float | None]:
    """Return the ``{"connect", "read", "write", "pool"}`` dict httpx's client attaches.

    A request built by hand (no client) has none; like httpcore, that means "no timeout".
    """
    value: Any = request.extensions.get("timeout")
    return value if value is not None else _NO_TIMEOUTS


OriginKey = tuple[bytes, bytes, int | None, str | None]


def origin_key(request: httpx.Request) -> OriginKey:
    """The pool a request belongs to: scheme, host, port and, for https, the TLS name.

    ``sni_hostname`` (the extension httpcore honours; the mesh puts the service name
    there) is part of the key only for https, because a TLS connection verified for one
    name cannot serve another, while plain-http connections to an endpoint are
    interchangeable.
    """
    url = request.url
    scheme = url.raw_scheme
    connect = request.extensions.get(CONNECT)
    if connect is not None:  # Connect mutual TLS, whatever the URL's scheme: one pool per identity
        return (b"https", url.raw_host, url.port, "connect:" + connect.key)
    sni = request.extensions.get("sni_hostname") if scheme == b"https" else None
    return (scheme, url.raw_host, url.port, sni)


def connect_refused(reason: str, request: httpx.Request) -> httpx.ConnectError:
    """A Connect server whose certificate names another identity: the request was never sent."""
    return httpx.ConnectError(f"Connect identity check failed: {reason}", request=request)


#: ``request.extensions`` key of headers added for one attempt only (``[(name, value)]``, str):
#: the mesh's deadline and trace context go on the wire without changing the caller's request.


def encode_head(request: httpx.Request) -> bytes:
    """Serialise the request line and headers exactly as httpx prepared them.

    httpx has already added Host and Content-Length/Transfer-Encoding, so headers go out
    verbatim, plus the attempt's own headers (``ATTEMPT_HEADERS``), which replace any of the
    same name. Counting line breaks afterwards is a cheap C-level scan that rejects CR/LF
    smuggled in a header value or method (header injection), which h11 would also refuse.
    """
    raw = request.headers.raw
    extra = request.extensions.get(ATTEMPT_HEADERS)
    if extra:
        added = [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in extra]
        names = {k.lower() for k, _ in added}
        raw = [kv for kv in raw if kv[0].lower() not in names]
        raw.extend(added)
    lines = b"".join([k + b": " + v + b"\r\n" for k, v in raw])
    head = b"%s %s HTTP/1.1\r\n%s\r\n" % (
        request.method.encode("ascii"),
        request.url.raw_path,
        lines,
    )
    expected = len(raw) + 2
    if head.count(b"\n") != expected or head.count(b"\r") != expected:
        raise httpx.LocalProtocolError("CR or LF in request method or header", request=request)
    return head


def in_memory_body(request: httpx.Request) -> bytes | None:
    """Return the body if httpx already holds it in memory, else ``None`` (stream it).

    httpx reads ``content=``/``json=``/``data=`` bodies eagerly, so this is the common
    case and lets the driver send head and body in a single write (one syscall, one
    segment with TCP_NODELAY).
    """
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


def is_chunked(request: httpx.Request) -> bool:
    """Whether the prepared headers promise a chunked body (httpx sets it for generators)."""
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def frame_chunk(chunk: bytes) -> bytes:
    """Frame one non-empty chunk of a chunked request body."""
    return b"%x\r\n%s\r\n" % (len(chunk), chunk)


def error_message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def connect_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """Map a failure while establishing TCP/TLS: the request was certainly not sent."""
    if isinstance(exc, TimeoutError):
        return httpx.ConnectTimeout(error_message(exc), request=request)
    return httpx.ConnectError(error_message(exc), request=request)


def write_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """Map a failure while sending: the upstream may have seen part of the request."""
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(exc, TimeoutError):
        return httpx.WriteTimeout(error_message(exc), request=request)
    return httpx.WriteError(error_message(exc), request=request)


def read_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """Map a failure while waiting for/reading the response: the request was sent."""
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(error_message(exc), request=request)
    return httpx.ReadError(error_message(exc), request=request)


class _Pooled(Protocol):
    idle: bool
    idle_since: float

    def abort(self) -> None: ...


C = TypeVar("C", bound=_Pooled)


class PoolBase(Generic[C]):
    """Per-origin connection bookkeeping, identical for both drivers; only waiting differs.

    ``open`` counts live connections plus connects in progress and is what
    ``max_connections`` bounds. Idle connections are a LIFO deque: the most recently used
    one is the least likely to have been closed by the server, and when the newest idle
    connection has outlived ``keepalive_expiry`` every older one has too. A released
    connection (or a freed slot, passed as ``None``) goes to the oldest waiter through
    :meth:`hand`, so a waiting request is never overtaken by a newcomer (FIFO).
    Subclasses implement :meth:`hand`; the sync one also wraps calls in its lock.
    """

    def __init__(self, request: httpx.Request, key: OriginKey, limits: httpx.Limits) -> None:
        scheme, host, port, sni = key
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(
                f"Unsupported URL scheme {scheme.decode()!r}.", request=request
            )
        self.tls = scheme == b"https"
        self.host = host.decode("ascii")
        self.port = port or (443 if self.tls else 80)
        self.connect: ConnectPeer | None = request.extensions.get(CONNECT)
        self.server_hostname = sni or self.host  # a Connect peer names its own, per connection
        self.max_open = limits.max_connections
        self.max_idle = limits.max_keepalive_connections
        self.expiry = limits.keepalive_expiry
        self.idle: deque[C] = deque()
        self.open = 0
        self.closed = False

    def hand(self, value: C | None) -> bool:
        """Give a connection or a slot to the oldest live waiter; False if none."""
        raise NotImplementedError

    def take_idle(self) -> C | None:
        """Pop the newest idle connection unless it (and so every idle one) expired."""
        idle = self.idle
        if not idle:
            return None
        conn = idle[-1]
        if self.expiry is not None and time.monotonic() - conn.idle_since > self.expiry:
            self.close_idle()
            return None
        idle.pop()
        conn.idle = False
        return conn

    def reserve(self) -> bool:
        """Claim a slot for a new connection if the origin is below ``max_connections``."""
        if self.max_open is None or self.open < self.max_open:
            self.open += 1
            return True
        return False

    def release(self, conn: C, reuse: bool) -> None:
        """Take a connection back after its response closed; ``reuse`` only if clean."""
        if reuse and not self.closed:
            if self.hand(conn):
                return
            idle = self.idle
            if self.max_idle is None or len(idle) < self.max_idle:
                now = conn.idle_since = time.monotonic()
                conn.idle = True
                idle.append(conn)
                if self.expiry is not None:
                    while now - idle[0].idle_since > self.expiry:
                        self.drop(idle.popleft())
                return
        self.drop(conn)

    def drop(self, conn: C) -> None:
        """Close a connection that is not in the idle deque and free its slot."""
        conn.idle = False
        conn.abort()
        self.free_slot()

    def free_slot(self) -> None:
        """A connection is gone: let the oldest waiter open a new one, or shrink."""
        if not self.hand(None):
            self.open -= 1

    def discard(self, conn: C) -> None:
        """An idle connection turned out dead: forget it."""
        if conn.idle:
            self.idle.remove(conn)
            self.drop(conn)

    def close_idle(self) -> None:
        while self.idle:
            self.drop(self.idle.pop())

    def forget_inherited(self) -> None:
        """In a forked child: close this process's copies of every connection, quietly."""
        raise NotImplementedError


P = TypeVar("P", bound=PoolBase[Any])


class EngineBase(Generic[P]):
    """Constructor, TLS settings and the origin -> pool map shared by both engines.

    The signature mirrors httpx's transports so the engine drops in where users already
    configure httpx. The TLS context is only built when the first https request arrives
    (loading CA certificates costs milliseconds that plain-http meshes never pay); a race
    between threads at that moment at worst builds two equivalent contexts.
    """

    mesh_native = True
    """This transport writes ``request.extensions[ATTEMPT_HEADERS]`` on the wire itself, so the
    pipeline need not copy the caller's headers for each attempt."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self._verify = verify
        self._cert = cert
        self._trust_env = trust_env
        self._ssl: ssl.SSLContext | None = None
        self._pools: dict[OriginKey, P] = {}
        track(self)

    def forget_inherited(self) -> None:
        """In a forked child: forget the parent's connections (see ``forking``)."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.closed = True
            pool.forget_inherited()

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(
                verify=self._verify, cert=self._cert, trust_env=self._trust_env
            )
        return self._ssl
