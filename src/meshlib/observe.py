"""What one mesh call reports to OpenTelemetry, at the fixed points the drivers pass through.

The drivers call ``Observer.begin`` once per call; it returns ``None`` when neither tracing nor
metrics is active, and the drivers skip every other hook, so the cost of observability with no
SDK is one call and two type checks per request. Otherwise a ``CallObservation`` owns the
logical span, starts each attempt's CLIENT span and writes its context into the request
headers, counts retries, requeues and budget refusals, and records the durations (see
``tracing`` and ``metrics`` for the shapes).
"""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry import propagate
from opentelemetry.trace import Span

from meshlib.attempt import Attempt
from meshlib.call import Call
from meshlib.metrics import MeshMetrics
from meshlib.tracing import Tracing, error_type

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
    """The telemetry of one call in flight."""

    __slots__ = (
        "_attempt_span",
        "_call",
        "_injected",
        "_metrics",
        "_obs",
        "_port",
        "_span",
        "_started",
        "_url",
    )

    def __init__(
        self, obs: Observer, call: Call, url: httpx.URL, trace_on: bool, metrics_on: bool
    ) -> None:
        self._obs = obs
        self._call = call
        self._url = url
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._metrics = obs.metrics if metrics_on else None
        self._span: Span | None = (
            obs.tracing.start_call(call.service.target.service, call.request.method)
            if trace_on
            else None
        )
        self._attempt_span: Span | None = None
        self._started = call.router.clock.now()
        # Propagation headers the caller did not set themselves: removed after each attempt
        # so they never follow a redirect out of the mesh.
        headers = call.request.headers
        self._injected = tuple(f for f in propagate.get_global_textmap().fields if f not in headers)

    @property
    def service(self) -> str:
        return self._call.service.target.service

    def attempt(self, attempt: Attempt, request: httpx.Request) -> None:
        """An attempt is about to be sent: span, ``traceparent``, in-flight gauge."""
        if self._span is not None:
            ep = attempt.state.endpoint
            span = self._obs.tracing.start_attempt(
                self._span, request, self._url, self.service, ep.host, ep.port, attempt.number
            )
            self._attempt_span = span
            self._obs.tracing.inject(span, request.headers)
            if attempt.probe:
                self._span.add_event("mesh.breaker.probe", {"mesh.endpoint": ep.address})
        m = self._metrics
        if m is not None:
            attrs = m.attrs(request.method, self.service, self._port, None, None)
            m.active.add(1, attrs)
            attempt.observer = self._attempt_done

    def _attempt_done(self, attempt: Attempt, rtt: float | None) -> None:
        m = self._metrics
        assert m is not None
        method = self._call.request.method
        m.active.add(-1, m.attrs(method, self.service, self._port, None, None))
        if rtt is None:
            return  # cancelled: no duration to report
        attrs = m.attrs(method, self.service, self._port, attempt.status, attempt.error)
        m.attempt_duration.record(rtt, attrs)

    def cleanup(self, request: httpx.Request) -> None:
        """After an attempt: drop the propagation headers meshlib wrote for it."""
        headers = request.headers
        for name in self._injected:
            if name in headers:
                del headers[name]

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
            attrs: dict[str, Any] = {
                "http.request.method": call.request.method,
                "server.address": self.service,
            }
            if outcome is not None:
                attrs["error.type"] = outcome
            m.call_duration.record(call.router.clock.now() - self._started, attrs)
