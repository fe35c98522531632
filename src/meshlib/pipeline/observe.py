"""What one mesh call reports to OpenTelemetry, at the fixed points the drivers pass through.

The drivers call ``Observer.begin`` once per call; it returns ``None`` when neither tracing nor
metrics is active, and the drivers skip every other hook, so the cost of observability with no
SDK is one call and two type checks per request. Otherwise a ``CallObservation`` owns the
logical span, starts each attempt's CLIENT span and adds its context to the attempt's own
headers (never to the caller's request), counts retries, requeues and budget refusals, and
records the durations (see ``tracing`` and ``metrics`` for the shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from meshlib.otel.metrics import MeshMetrics
from meshlib.otel.tracing import Context, Span, Tracing, error_type, url_port
from meshlib.pipeline.attempt import Attempt
from meshlib.pipeline.call import Call

__all__ = ["CallObservation", "Observer"]


_SHAPE_LIMIT = 1024
_PEER_LIMIT = 256


class _Shape:
    """What every call with one method, service and URL reports alike, built on its first call:
    the call span's name and attributes, the attempt attributes common to all attempts, one
    attempt attribute set per endpoint and attempt number, the in-flight key and the metric
    attribute sets. The dicts are shared between calls and never changed after they are built
    (the SDK copies what it keeps)."""

    __slots__ = ("call_span", "common", "flight_key", "method", "metric_sets", "peers", "service")

    def __init__(self, tracing: Tracing, method: str, service: str, url: httpx.URL) -> None:
        self.method = method
        self.service = service
        self.call_span = tracing.call_span_attributes(service, method)
        self.common = tracing.call_attributes(method, service, url)
        self.flight_key = (method, service, url_port(url))
        self.peers: dict[tuple[str, int, int], dict[str, Any]] = {}
        self.metric_sets: dict[tuple[int | None, int | None, str | None], Mapping[str, Any]] = {}

    def attempt_attributes(self, host: str, port: int, number: int) -> dict[str, Any]:
        key = (host, port, number)
        found = self.peers.get(key)
        if found is None:
            found = Tracing.attempt_attributes(self.common, host, port, number)
            if len(self.peers) >= _PEER_LIMIT:
                self.peers.clear()
            self.peers[key] = found
        return found

    def metric_attributes(
        self, metrics: MeshMetrics, port: int | None, status: int | None, error: str | None
    ) -> Mapping[str, Any]:
        key = (port, status, error)
        found = self.metric_sets.get(key)
        if found is None:
            found = metrics.attrs(self.method, self.service, port, status, error)
            if len(self.metric_sets) < _PEER_LIMIT:
                self.metric_sets[key] = found
        return found


def _url_key(url: httpx.URL) -> object:
    # httpx keeps the parsed URL as a named tuple of strings, whose hash is cheap; str(url)
    # would rebuild the text on every call.
    return getattr(url, "_uri_reference", None) or str(url)


class Observer:
    """Per-pipeline entry point: decides per call whether anything is listening."""

    def __init__(self, tracing: Tracing, metrics: MeshMetrics) -> None:
        self.tracing = tracing
        self.metrics = metrics
        self._shapes: dict[tuple[str, str, object], _Shape] = {}

    def begin(self, call: Call, url: httpx.URL) -> CallObservation | None:
        trace_on = self.tracing.active()
        metrics_on = self.metrics.enabled()
        if not (trace_on or metrics_on):
            return None
        return CallObservation(self, call, url, trace_on, metrics_on)

    def shape(self, method: str, service: str, url: httpx.URL) -> _Shape:
        key = (method, service, _url_key(url))
        found = self._shapes.get(key)
        if found is None:
            found = _Shape(self.tracing, method, service, url)
            if len(self._shapes) >= _SHAPE_LIMIT:
                self._shapes.clear()
            self._shapes[key] = found
        return found


class CallObservation:
    """The telemetry of one call in flight.

    Whatever is the same for every call of its shape (span name and attributes, attempt
    attributes per endpoint, metric attribute sets) comes from the observer's ``_Shape``; the
    span context to parent attempts on is computed once per call.
    """

    __slots__ = (
        "_call",
        "_last",
        "_metrics",
        "_parent",
        "_shape",
        "_span",
        "_started",
        "_tracing",
    )

    def __init__(
        self, obs: Observer, call: Call, url: httpx.URL, trace_on: bool, metrics_on: bool
    ) -> None:
        self._call = call
        self._metrics = obs.metrics if metrics_on else None
        self._tracing = tracing = obs.tracing
        method, service = call.request.method, call.service.target.service
        self._shape = shape = obs.shape(method, service, url)
        self._span: Span | None = None
        self._parent: Context | None = None
        if trace_on:
            self._span = span = tracing.start_call(service, method, shape.call_span)
            self._parent = tracing.context_of(span)
        self._last: Attempt | None = None
        self._started = call.router.clock.now()

    @property
    def service(self) -> str:
        return self._shape.service

    def attempt(self, attempt: Attempt, request: httpx.Request) -> None:
        """An attempt is about to be sent: span, trace headers, in-flight count."""
        if self._span is not None:
            assert self._parent is not None
            tracing = self._tracing
            ep = attempt.state.endpoint
            attrs = self._shape.attempt_attributes(ep.host, ep.port, attempt.number)
            span = tracing.start_attempt_with(self._parent, request.method, attrs)
            attempt.span = span
            self._last = attempt
            carrier: dict[str, str] = {}
            tracing.inject(span, carrier)
            attempt.headers.extend(carrier.items())
            if attempt.probe:
                self._span.add_event("mesh.breaker.probe", {"mesh.endpoint": ep.address})
        m = self._metrics
        if m is not None:
            m.attempt_started(self._shape.flight_key)
            attempt.observer = self._attempt_done

    def _attempt_done(self, attempt: Attempt, rtt: float | None) -> None:
        m = self._metrics
        assert m is not None
        shape = self._shape
        m.attempt_ended(shape.flight_key)
        if rtt is None:
            return  # cancelled: no duration to report
        attrs = shape.metric_attributes(m, shape.flight_key[2], attempt.status, attempt.error)
        m.attempt_duration.record(rtt, attrs)

    def response(self, attempt: Attempt, response: httpx.Response, done: bool = True) -> None:
        """The attempt's head arrived. ``done=False``: its body is read next, inside the retry
        loop, so the span stays open until ``finish`` (read) or ``error`` (failed mid-body)."""
        status = attempt.status = response.status_code
        if status >= 400:
            attempt.error = str(status)
        span = attempt.span
        if span is not None:
            if done:
                attempt.span = None
                self._tracing.end_attempt(span, response, None)
            else:
                self._tracing.attempt_head(span, response)

    def error(self, attempt: Attempt, exc: BaseException) -> None:
        attempt.error = error_type(exc)
        span = attempt.span
        if span is not None:
            attempt.span = None
            self._tracing.end_attempt(span, None, exc)

    def hedge_sent(self, attempt: Attempt, delay: float) -> None:
        """``attempt`` is a backup, sent ``delay`` seconds after the original."""
        if attempt.span is not None:
            self._tracing.mark_hedge(attempt.span)
        if self._span is not None:
            self._span.add_event(
                "mesh.hedge",
                {"mesh.hedge.delay_s": round(delay, 6), "mesh.attempt": self._call.attempts},
            )

    def hedge_outcome(self, outcome: str) -> None:
        """``won``, ``lost`` or ``budget_exhausted``: counted in ``mesh.client.hedges``."""
        if self._metrics is not None:
            self._metrics.hedges.add(
                1, {"mesh.service": self.service, "mesh.hedge.outcome": outcome}
            )

    def cancelled(self, attempt: Attempt) -> None:
        """``attempt`` lost a hedged race and was cancelled."""
        span = attempt.span
        if span is not None:
            attempt.span = None
            self._tracing.end_cancelled(span)

    def retrying(self, delay: float, reason: str) -> None:
        """The call goes on: a ``requeue`` (not sent) or a ``retry``, after ``delay``."""
        if self._span is not None:
            self._span.add_event(
                f"mesh.{reason}",
                {"mesh.retry.delay_s": round(delay, 6), "mesh.attempt": self._call.attempts},
            )
        if self._metrics is not None:
            self._metrics.retries.add(
                1, {"mesh.service": self.service, "mesh.retry.reason": reason}
            )

    def finish(self, response: httpx.Response | None, error: BaseException | None) -> None:
        """The call returns ``response`` or raises ``error``."""
        call = self._call
        outcome: str | None = None
        if error is not None:
            outcome = error_type(error)
        elif response is not None and response.status_code >= 500:
            outcome = str(response.status_code)
        if outcome is not None:
            if call.budget_exhausted:
                outcome = "retry_budget_exhausted"
            if call.last_in_panic:
                outcome = "circuit_open"
        last = self._last
        if last is not None and last.span is not None:
            self._tracing.end_attempt(last.span, response, error)
            last.span = None
        if self._span is not None:
            self._tracing.end_call(
                self._span, outcome, response.status_code if response is not None else None
            )
        m = self._metrics
        if m is not None:
            if call.budget_exhausted:
                m.budget_exhausted.add(1, {"mesh.service": self.service})
            attrs = self._shape.metric_attributes(m, None, None, outcome)
            m.call_duration.record(call.router.clock.now() - self._started, attrs)
