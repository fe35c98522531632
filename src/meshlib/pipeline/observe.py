"""What one mesh call reports to OpenTelemetry, at the fixed points the drivers pass through.

The drivers call ``Observer.begin`` once per call; it returns ``None`` when neither tracing nor
metrics is active, and the drivers skip every other hook, so the cost of observability with no
SDK is one call and two type checks per request. Otherwise a ``CallObservation`` owns the
logical span, starts each attempt's CLIENT span and adds its context to the attempt's own
headers (never to the caller's request), counts retries, requeues and budget refusals, and
records the durations (see ``tracing`` and ``metrics`` for the shapes).
"""

from __future__ import annotations

from typing import Any

import httpx

from meshlib.otel.metrics import MeshMetrics
from meshlib.otel.tracing import Context, Span, Tracing, error_type, url_port
from meshlib.pipeline.attempt import Attempt
from meshlib.pipeline.call import Call

__all__ = ["CallObservation", "Observer"]


class Observer:
    """Per-pipeline entry point: decides per call whether anything is listening."""

    def __init__(self, tracing: Tracing, metrics: MeshMetrics) -> None:
        self.tracing = tracing
        self.metrics = metrics

    def begin(self, call: Call, url: httpx.URL) -> CallObservation | None:
        trace_on = self.tracing.active()
        metrics_on = self.metrics.enabled()
        if not (trace_on or metrics_on):
            return None
        return CallObservation(self, call, url, trace_on, metrics_on)


class CallObservation:
    """The telemetry of one call in flight.

    Whatever is the same for every attempt (the span context to parent attempts on, the
    attempt attributes, the metric attribute sets) is computed once per call.
    """

    __slots__ = (
        "_attempt_span",
        "_call",
        "_common",
        "_flight_key",
        "_metrics",
        "_obs",
        "_parent",
        "_span",
        "_started",
    )

    def __init__(
        self, obs: Observer, call: Call, url: httpx.URL, trace_on: bool, metrics_on: bool
    ) -> None:
        self._obs = obs
        self._call = call
        self._metrics = obs.metrics if metrics_on else None
        method, service = call.request.method, call.service.target.service
        self._span: Span | None = None
        self._parent: Context | None = None
        self._common: dict[str, Any] | None = None
        if trace_on:
            self._span = obs.tracing.start_call(service, method)
            self._parent = obs.tracing.context_of(self._span)
            self._common = obs.tracing.call_attributes(method, service, url)
        self._attempt_span: Span | None = None
        self._flight_key = (method, service, url_port(url))
        self._started = call.router.clock.now()

    @property
    def service(self) -> str:
        return self._call.service.target.service

    def attempt(self, attempt: Attempt, request: httpx.Request) -> None:
        """An attempt is about to be sent: span, trace headers, in-flight count."""
        if self._span is not None:
            assert self._parent is not None
            assert self._common is not None
            tracing = self._obs.tracing
            ep = attempt.state.endpoint
            span = tracing.start_attempt(
                self._parent, request.method, self._common, ep.host, ep.port, attempt.number
            )
            self._attempt_span = span
            carrier: dict[str, str] = {}
            tracing.inject(span, carrier)
            attempt.headers.extend(carrier.items())
            if attempt.probe:
                self._span.add_event("mesh.breaker.probe", {"mesh.endpoint": ep.address})
        m = self._metrics
        if m is not None:
            m.attempt_started(self._flight_key)
            attempt.observer = self._attempt_done

    def _attempt_done(self, attempt: Attempt, rtt: float | None) -> None:
        m = self._metrics
        assert m is not None
        key = self._flight_key
        m.attempt_ended(key)
        if rtt is None:
            return  # cancelled: no duration to report
        method, service, port = key
        attrs = m.attrs(method, service, port, attempt.status, attempt.error)
        m.attempt_duration.record(rtt, attrs)

    def response(self, attempt: Attempt, response: httpx.Response) -> None:
        attempt.status = response.status_code
        if response.status_code >= 400:
            attempt.error = str(response.status_code)
        if self._attempt_span is not None:
            self._obs.tracing.end_attempt(self._attempt_span, response, None)
            self._attempt_span = None

    def error(self, attempt: Attempt, exc: BaseException) -> None:
        attempt.error = error_type(exc)
        if self._attempt_span is not None:
            self._obs.tracing.end_attempt(self._attempt_span, None, exc)
            self._attempt_span = None

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
        if call.budget_exhausted and outcome is not None:
            outcome = "retry_budget_exhausted"
        if call.last_in_panic and outcome is not None:
            outcome = "circuit_open"
        if self._attempt_span is not None:
            self._obs.tracing.end_attempt(self._attempt_span, response, error)
        if self._span is not None:
            self._obs.tracing.end_call(
                self._span, outcome, response.status_code if response is not None else None
            )
        m = self._metrics
        if m is not None:
            if call.budget_exhausted:
                m.budget_exhausted.add(1, {"mesh.service": self.service})
            attrs = m.attrs(call.request.method, self.service, None, None, outcome)
            m.call_duration.record(call.router.clock.now() - self._started, attrs)
