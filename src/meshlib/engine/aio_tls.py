"""TLS for the asyncio engine: an ``ssl.SSLObject`` over memory BIOs between the socket and a
``Connection``, in place of asyncio's own SSL transport.

Why: asyncio's ``sslproto`` is a general state machine (buffered protocols, an app-transport
object, flow control in both directions, a read loop that re-enters through several methods)
and costs tens of microseconds of Python per request on a keep-alive connection; over Connect
mutual TLS that alone made a mesh call 1.2x the CPU of a plaintext one. The engine's use is
narrow: a client that writes one request and reads one response at a time. So the layer here
does only that: the socket's bytes go into the incoming BIO and every whole record is read out
at once and handed to the connection's ``data_received``; a write is encrypted and passed to
the socket transport in one call. The handshake, certificate verification and every record
operation are OpenSSL's, through the same ``SSLContext`` as before: only the Python around it
is smaller.

To the connection, ``TlsLayer`` is its transport (``write``, ``abort``, ``pause_reading``,
``get_extra_info("ssl_object")``...); to the socket transport, it is the protocol.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

__all__ = ["TlsLayer"]

_READ = 256 * 1024  # plaintext read per call: a whole keep-alive response in one go


class TlsLayer(asyncio.Protocol, asyncio.Transport):
    """One client TLS session between a socket transport and the engine's ``Connection``: the
    socket's protocol and the connection's transport (the calls the engine makes of one)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        server_hostname: str | None,
        app: asyncio.Protocol,
    ) -> None:
        asyncio.Transport.__init__(self)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._app = app
        self._raw: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = loop.create_future()
        """Done when the session is up (its exception: why it could not be)."""
        self._closed = False

    # -- the socket transport's protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._shake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.handshake.done():
            self._shake()
            if not self.handshake.done() or self._closed:
                return
        chunks: list[bytes] = []
        tls, incoming = self._ssl, self._incoming
        try:
            while True:
                chunk = tls.read(_READ)
                if not chunk:  # the peer's close_notify: end of stream, like a TCP FIN
                    self._deliver(chunks)
                    self._app.eof_received()
                    return
                chunks.append(chunk)
                # Nothing left to decrypt: stop without the read that would raise
                # SSLWantReadError (building that exception costs more than the decryption).
                if not incoming.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass  # every whole record has been read
        except ssl.SSLZeroReturnError:
            self._deliver(chunks)
            self._app.eof_received()
            return
        except ssl.SSLError as exc:  # a corrupt or forged record: the connection is over
            self._deliver(chunks)
            self._fail(exc)
            return
        if self._outgoing.pending:  # TLS 1.3 may answer a record (a key update) itself
            self._flush()
        self._deliver(chunks)

    def _deliver(self, chunks: list[bytes]) -> None:
        if chunks:
            self._app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def eof_received(self) -> bool:
        if not self.handshake.done():
            self._refuse(
                ConnectionResetError("the server closed the connection during the TLS handshake")
            )
            return False
        self._app.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self._refuse(
                exc or ConnectionResetError("the connection closed during the TLS handshake")
            )
        self._closed = True
        self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._app.resume_writing()

    # -- the connection's transport -----------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if self._closed:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._flush()

    def abort(self) -> None:
        self._closed = True
        if self._raw is not None:
            self._raw.abort()

    def close(self) -> None:
        self.abort()

    def is_closing(self) -> bool:
        return self._closed or self._raw is None or self._raw.is_closing()

    def pause_reading(self) -> None:
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._raw is not None:
            self._raw.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

    # -- helpers ------------------------------------------------------------------------

    def _shake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()  # our flight, then wait for the server's
            return
        except (ssl.SSLError, ValueError) as exc:  # verification failed, a protocol error
            self._flush()  # the alert, so the server learns why
            self._refuse(exc)
            return
        self._flush()
        self.handshake.set_result(None)

    def _flush(self) -> None:
        out = self._outgoing.read()
        if out and self._raw is not None and not self._raw.is_closing():
            self._raw.write(out)

    def _refuse(self, exc: BaseException) -> None:
        """The session never came up: the handshake's waiter gets ``exc`` and the connection,
        which was never handed this transport, hears nothing more."""
        self._app = _Gone()
        self.abort()
        self.handshake.set_exception(exc)

    def _fail(self, exc: Exception) -> None:
        """The session broke after the handshake: the connection learns why now, and the
        socket's own ``connection_lost`` that follows the abort goes nowhere."""
        app, self._app = self._app, _Gone()
        self.abort()
        app.connection_lost(exc)


class _Gone(asyncio.Protocol):
    """Where a failed session's late callbacks go: the connection has been told, or never
    had the session."""

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        return None
