"""The request, result and error values that pass between FakeConsul's HTTP layer and its handlers.

Handlers never see sockets: they get a parsed ``Request`` and return either a ``Result`` (data
plus the Raft-style index the blocking-query machinery compares) or a finished ``Response``, or
raise ``HTTPError`` with Consul's plain-text message. Keeping this boundary small is what lets
the handlers be tested and reasoned about without the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from meshlib.traffic.durations import parse_go_bool

__all__ = [
    "HTTPError",
    "Request",
    "Response",
    "Result",
    "encode_json",
    "text_response",
]

# Go's encoding/json escapes these for HTML safety; matching it keeps byte-level output alike.
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def encode_json(data: Any, *, pretty: bool = False) -> bytes:
    """Encode like Consul: compact ``json.Marshal``, or 4-space ``MarshalIndent`` plus newline."""
    if pretty:
        text = json.dumps(data, ensure_ascii=False, indent=4) + "\n"
    else:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_GO_ESCAPES).encode("utf-8")


class HTTPError(Exception):
    """An error answer: Consul writes the message as a plain-text body with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(slots=True)
class Request:
    """One parsed HTTP request; ``tail`` is the decoded path after the matched route prefix."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    version: str = "HTTP/1.1"
    target: str = ""
    tail: str = ""

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None when absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def params(self, name: str) -> list[str]:
        """Every value of a repeatable query parameter such as ``tag`` or ``node-meta``."""
        return list(self.query.get(name, ()))

    def has(self, name: str) -> bool:
        """True when the parameter is present at all, even bare (``?pretty``, ``?stale``)."""
        return name in self.query

    def flag(self, name: str) -> bool:
        """Consul's ``getBoolQueryParam``: bare means true, otherwise Go ``ParseBool``."""
        value = self.param(name)
        if value is None:
            return False
        if value == "":
            return True
        try:
            return parse_go_bool(value)
        except ValueError:
            raise HTTPError(400, f"Invalid value for ?{name}") from None


@dataclass(slots=True)
class Response:
    """A complete answer; the HTTP layer adds Date, Content-Length and connection headers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Result:
    """What a read or write handler produced, before encoding and blocking-query headers.

    ``index`` is the Raft-style index a blocking query compares with ``?index=`` (None for
    endpoints that do not block on an index); ``content_hash`` serves hash-based blocking
    (``/v1/agent/service/:id``). ``raw`` bypasses JSON encoding (``?raw`` KV reads, text health).
    """

    data: Any = None
    index: int | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_hash: str | None = None
    raw: bytes | None = None
    content_type: str = "application/json"
    empty_body: bool = False


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A plain-text answer, which is how Consul's HTTP layer reports every error."""
    merged = {"Content-Type": "text/plain; charset=utf-8"}
    merged.update(headers or {})
    return Response(status=status, body=message.encode("utf-8"), headers=merged)
