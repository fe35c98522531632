"""OpenTelemetry traces for mesh calls: one INTERNAL span per call, one CLIENT span per attempt.

Only the global API is used (``get_tracer``, the global propagator); meshlib never installs a
provider. The shape follows the stable HTTP semantic conventions:

* the logical call is an INTERNAL span ``mesh <service>`` (the spec forbids wrapping attempts
  in another CLIENT span); backoff sleeps, deadline expiry and "no endpoints" happen inside it,
  and requeues, retries and breaker decisions are span events on it;
* each physical attempt is a CLIENT span named ``{method}`` with ``http.request.method``,
  ``server.address``/``server.port`` (the service name and port), ``network.peer.address``/
  ``network.peer.port`` (the endpoint), ``url.full`` (redacted), ``http.response.status_code``,
  ``http.request.resend_count`` (from the second attempt on) and ``error.type``;
* a hedged (backup) attempt is a CLIENT span like any other, marked ``mesh.hedge=true``; the
  attempt that lost the race is ended with ``mesh.attempt.cancelled=true`` and no error, and the
  call span gets a ``mesh.hedge`` event when the backup is sent;
* each attempt carries its own span context in ``traceparent`` (and ``tracestate``, ``baggage``)
  through the global propagator, so ``OTEL_PROPAGATORS`` (B3 and others) is respected; these
  headers go to mesh services only, never to pass-through hosts unless allow-listed.

Cost: when no SDK is installed and no trace is active, a call does one type check and nothing
else; when only an incoming trace is active (no SDK), its context is still propagated.
"""

from __future__ import annotations

import contextvars
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from meshlib.errors import DeadlineExceeded, DiscoveryError, NoEndpointsAvailable, RateLimited

__all__ = [
    "Context",
    "PassThroughSpan",
    "Span",
    "SuppressedHTTP",
    "Tracing",
    "attached",
    "background_context",
    "error_type",
    "incoming_context",
    "redact_url",
    "suppressed_http_instrumentation",
    "url_port",
]

_REDACT_PARAMS = frozenset({"sig", "signature", "awsaccesskeyid", "x-goog-signature"})
_SUPPRESS_HTTP = context._SUPPRESS_HTTP_INSTRUMENTATION_KEY  # the key instrumentations check
_UNKNOWN = object()


def url_port(url: httpx.URL) -> int:
    """``server.port``: the URL's port, or its scheme's default."""
    return url.port or (443 if url.scheme == "https" else 80)


def _may_hold_signature(query: bytes) -> bool:
    # Every name in _REDACT_PARAMS contains "sig" or is "awsaccesskeyid": a substring test
    # spares the common query (no such name) a parse and re-encode. A percent-escape could
    # spell a name in disguise, so any "%" takes the full parse.
    low = query.lower()
    return b"sig" in low or b"awsaccesskeyid" in low or b"%" in low


def redact_url(url: httpx.URL) -> str:
    """``url.full`` without credentials: userinfo and signature parameters become REDACTED."""
    text = str(url)
    if not url.userinfo and not (url.query and _may_hold_signature(url.query)):
        return text
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = urllib.parse.urlencode(
            [(k, "REDACTED" if k.lower() in _REDACT_PARAMS else v) for k, v in pairs]
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_last_provider: object = _UNKNOWN
_last_installed = False


def _tracing_installed() -> bool:
    # ``get_tracer_provider()`` reads os.environ on every call while no provider is set; the
    # API's own global tells the same thing without that cost (checked with a fallback in case
    # the API ever renames it). The answer is remembered per provider object: the ABC
    # isinstance checks cost about a microsecond, on every call.
    global _last_provider, _last_installed
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    if provider is _last_provider:
        return _last_installed
    installed = provider is not None and not isinstance(
        provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )
    _last_provider, _last_installed = provider, installed
    return installed


class SuppressedHTTP:
    """Stop httpx auto-instrumentation from adding a second CLIENT span under ours.

    A reusable context manager (one attempt after another, never nested), so a call makes one
    for all its attempts."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token: object = None

    def __enter__(self) -> None:
        self._token = context.attach(context.set_value(_SUPPRESS_HTTP, True))

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        context.detach(token)  # type: ignore[arg-type]


def background_context() -> contextvars.Context:
    """A fresh ``contextvars.Context`` for meshlib's own background work (Consul watches and
    heartbeats): none of the caller's span, baggage or other context variables, and HTTP
    instrumentation suppressed, so its requests neither join a user's trace nor start traces."""
    ctx = contextvars.Context()
    ctx.run(context.attach, context.set_value(_SUPPRESS_HTTP, True, context.Context()))
    return ctx


@contextmanager
def suppressed_http_instrumentation() -> Iterator[None]:
    """Stop httpx auto-instrumentation from adding a second CLIENT span under ours."""
    with SuppressedHTTP():
        yield


class Tracing:
    """Starts and ends the spans of one pipeline; cheap no-ops when nothing is listening."""

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("meshlib")

    def active(self) -> bool:
        """True when spans would be recorded or an incoming trace must be propagated."""
        if _tracing_installed():
            return True
        ctx = context.get_current()
        if not ctx:
            return False  # nothing at all in the context: no span, no baggage (the usual case)
        return trace.get_current_span(ctx).get_span_context().is_valid or bool(baggage.get_all(ctx))

    @staticmethod
    def context_of(span: Span) -> Context:
        """A context holding ``span``, to parent the attempt spans on."""
        return trace.set_span_in_context(span)

    def start_call(
        self, service: str, method: str, attributes: Mapping[str, Any] | None = None
    ) -> Span:
        """The INTERNAL call span; ``attributes`` (from ``call_span_attributes``) may be a dict
        built once and shared: it is never changed, and the SDK copies what it keeps."""
        if attributes is None:
            attributes = self.call_span_attributes(service, method)
        return self._tracer.start_span(
            f"mesh {service}", kind=SpanKind.INTERNAL, attributes=attributes
        )

    @staticmethod
    def call_span_attributes(service: str, method: str) -> dict[str, Any]:
        """The INTERNAL call span's attributes."""
        return {"mesh.service": service, "http.request.method": method}

    @staticmethod
    def call_attributes(method: str, service: str, url: httpx.URL) -> dict[str, Any]:
        """The attempt attributes that are the same for every attempt of a call (built once)."""
        return {
            "http.request.method": method,
            "server.address": service,
            "server.port": url_port(url),
            "url.full": redact_url(url),
        }

    @staticmethod
    def attempt_attributes(
        common: Mapping[str, Any], peer_host: str, peer_port: int, resend_count: int
    ) -> dict[str, Any]:
        """One attempt's CLIENT span attributes: ``common`` (from ``call_attributes``, copied,
        never changed) plus the endpoint and, from the second attempt on, the resend count."""
        attributes = dict(common)
        attributes["network.peer.address"] = peer_host
        attributes["network.peer.port"] = peer_port
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        return attributes

    def start_attempt(
        self,
        parent: context.Context,
        method: str,
        common: Mapping[str, Any],
        peer_host: str,
        peer_port: int,
        resend_count: int,
    ) -> Span:
        """A CLIENT span under ``parent`` (the context holding the call's span); ``common`` comes
        from ``call_attributes`` and is copied, never changed."""
        attributes = self.attempt_attributes(common, peer_host, peer_port, resend_count)
        return self._tracer.start_span(
            method, context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )

    def start_attempt_with(
        self, parent: context.Context, method: str, attributes: Mapping[str, Any]
    ) -> Span:
        """A CLIENT span under ``parent`` with ready attributes (from ``attempt_attributes``,
        possibly shared between calls: never changed, and the SDK copies what it keeps)."""
        return self._tracer.start_span(
            method, context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def inject(span: Span, headers: Any) -> None:
        """Write the span's context (and the current baggage) into ``headers`` through the global
        propagator: a dict or ``httpx.Headers``."""
        propagate.inject(headers, context=trace.set_span_in_context(span))

    @staticmethod
    def attempt_head(span: Span, response: httpx.Response) -> None:
        """The response head arrived: its status, on a span that may still fail mid-body."""
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 400:
            span.set_attribute("error.type", str(response.status_code))
            span.set_status(Status(StatusCode.ERROR))

    @staticmethod
    def end_attempt(
        span: Span, response: httpx.Response | None, error: BaseException | None
    ) -> None:
        """End the attempt's span with its outcome: the response, or the error that ended it
        (after the head, when the body failed)."""
        if response is not None:
            Tracing.attempt_head(span, response)
        elif error is not None:
            span.set_attribute("error.type", error_type(error))
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    @staticmethod
    def mark_hedge(span: Span) -> None:
        """This attempt is a hedge (a backup sent while another attempt was still out)."""
        span.set_attribute("mesh.hedge", True)

    @staticmethod
    def end_cancelled(span: Span) -> None:
        """The attempt lost a hedged race and was cancelled: no error, nothing went wrong."""
        span.set_attribute("mesh.attempt.cancelled", True)
        span.end()

    @staticmethod
    def event(span: Span, name: str, attributes: Mapping[str, Any]) -> None:
        span.add_event(name, attributes=dict(attributes))

    @staticmethod
    def end_call(span: Span, outcome: str | None, status_code: int | None = None) -> None:
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
        if outcome is not None:
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


@contextmanager
def incoming_context(headers: Mapping[str, str]) -> Iterator[context.Context | None]:
    """Make an incoming request's trace context and baggage current, unless a server span is
    already active (an OpenTelemetry ASGI/WSGI instrumentation extracted them itself). Yields
    the context it attached, or None."""
    if trace.get_current_span().get_span_context().is_valid:
        yield None
        return
    if (
        "traceparent" not in headers
        and "baggage" not in headers
        and "b3" not in headers
        and ("x-b3-traceid" not in headers)
    ):
        yield None
        return
    ctx = propagate.extract(headers)
    token = context.attach(ctx)
    try:
        yield ctx
    finally:
        context.detach(token)


@contextmanager
def attached(ctx: context.Context | None) -> Iterator[None]:
    """Attach ``ctx`` for the duration of the block (nothing when it is None)."""
    if ctx is None:
        yield
        return
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


class PassThroughSpan:
    """A pass-through request's telemetry: one CLIENT span (when an SDK is installed), httpx's
    own instrumentation suppressed so it adds no second span and injects nothing, and trace
    context sent only when the host is allow-listed. As for mesh attempts, the trace headers go
    on a copy of the caller's headers, so they cannot follow a redirect to a host that is not
    allow-listed."""

    __slots__ = ("_headers", "_propagate", "_request", "_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, request: httpx.Request, propagate_ok: bool) -> None:
        self._tracing = tracing
        self._request = request
        self._propagate = propagate_ok
        self._span: Span | None = None
        self._token: object | None = None
        self._headers: httpx.Headers | None = None

    def _own_headers(self) -> httpx.Headers:
        self._headers = self._request.headers
        self._request.headers = self._headers.copy()
        return self._request.headers

    def __enter__(self) -> PassThroughSpan:
        if not _tracing_installed():
            if self._propagate:
                propagate.inject(self._own_headers())
            return self
        url = self._request.url
        self._span = self._tracing._tracer.start_span(
            self._request.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": self._request.method,
                "server.address": url.host,
                "server.port": url_port(url),
                "url.full": redact_url(url),
            },
        )
        if self._propagate:
            Tracing.inject(self._span, self._own_headers())
        self._token = context.attach(context.set_value(_SUPPRESS_HTTP, True))
        return self

    def done(self, response: httpx.Response) -> httpx.Response:
        if self._span is not None:
            Tracing.end_attempt(self._span, response, None)
            self._span = None
        return response

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._headers is not None:
            self._request.headers = self._headers
        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
        if self._span is not None:
            Tracing.end_attempt(self._span, None, exc)


def error_type(error: BaseException) -> str:
    """The documented ``error.type`` for an exception (low cardinality)."""
    if isinstance(error, DeadlineExceeded):
        return "deadline_exceeded"
    if isinstance(error, NoEndpointsAvailable):
        return "no_endpoints"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, DiscoveryError):
        return "discovery_error"
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    return type(error).__qualname__
