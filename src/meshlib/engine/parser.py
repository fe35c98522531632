"""Turning response bytes into status, headers and body chunks, with httptools.

httptools is llhttp, the C parser uvicorn uses, roughly an order of magnitude cheaper than h11
in pure Python. Both engine drivers feed a connection's bytes to one ``ResponseParser`` and poll
its fields; it never waits, so it is written once for both.
"""

from __future__ import annotations

from typing import Any

import httpx
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .http11 import error_message

__all__ = ["ResponseParser"]


class ResponseParser:
    """Collects a connection's responses from httptools callbacks; drivers poll its fields.

    One instance lives on each connection and is re-armed by :meth:`start` per request.
    llhttp cannot be told that a response answers a HEAD request (with
    ``Content-Length: N`` it would wait for N body bytes that never come), so we declare
    the message complete at headers-complete for HEAD (and 101) and replace that llhttp
    parser before the next request.
    1xx interim responses (``100 Continue``, ``103 Early Hints``) are skipped; llhttp
    itself already treats 204/304 as bodiless.

    Fields read by drivers: ``status_code``, ``reason``, ``headers`` (raw byte pairs),
    ``chunks`` (body pieces not yet handed out) with ``buffered`` (their total size),
    ``headers_done``, ``complete``, ``keep_alive`` and ``started`` (any byte received).
    """

    def __init__(self) -> None:
        self._parser = HttpResponseParser(self)
        self._between = True  # llhttp sits between messages and can parse the next one
        self.start(None, False)

    def start(self, request: Any, no_body: bool) -> None:
        """Prepare for the response to ``request`` (HEAD, if ``no_body``) on this connection.

        The llhttp parser is kept across keep-alive exchanges when the previous message
        ended cleanly (creating one costs about a microsecond); after a HEAD response that
        announced a length llhttp still waits for that body, so a fresh one is made.
        """
        if not self._between:
            self._parser = HttpResponseParser(self)
            self._between = True
        self._request = request
        self._no_body = no_body
        self._interim = False
        self.status_code = 0
        self.reason = b""
        self.http_version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.started = False

    def take(self) -> bytes:
        """Hand out every buffered body piece as one bytes object (usually just one)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse received bytes; raises ``httpx.RemoteProtocolError`` on malformed HTTP."""
        self.started = True
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            pass  # 101: already finished at headers-complete; the rest is not HTTP.
        except HttpParserError as exc:
            if self.complete:
                self.keep_alive = False  # garbage after a finished message: don't reuse
                return
            raise httpx.RemoteProtocolError(
                f"malformed HTTP response: {error_message(exc)}", request=self._request
            ) from exc

    def feed_eof(self) -> None:
        """The server closed its side: finish a close-delimited body or report truncation."""
        self.keep_alive = False
        if self.complete:
            return
        request = self._request
        if not self.headers_done:
            if not self.started:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            raise httpx.RemoteProtocolError(
                "Server disconnected before the response headers were complete.",
                request=request,
            )
        for name, _ in self.headers:
            if name.lower() in (b"content-length", b"transfer-encoding"):
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending the complete message body.",
                    request=request,
                )
        self.complete = True  # neither length nor chunked: the body ends at EOF

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._between = False
        if self.headers_done:
            self.keep_alive = False  # a second message without a request: not reusable

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.headers_done:
            return
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            self._interim = True
            self.headers = []
            return
        self.status_code = status
        version = parser.get_http_version()
        if version != "1.1":
            self.http_version = b"HTTP/" + version.encode("ascii")
        self.headers_done = True
        if status == 101:
            self.complete = True  # we never asked to upgrade; hand back, then close
        else:
            self.keep_alive = parser.should_keep_alive()
            if self._no_body:
                self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False  # body bytes after a bodiless (HEAD) response
            return
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self.complete = True
            self._between = True
