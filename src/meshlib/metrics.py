"""OpenTelemetry metrics for the mesh: the HTTP client conventions plus what the mesh did.

Only the global metrics API is used; meshlib never installs a provider, and while none is
installed each recording is skipped after one type check. Attributes are low-cardinality only:
method, service name and port, status code, ``error.type``, reason or state. Never a URL or a
peer address: per-endpoint label sets grow without bound and have caused real outages
(CVE-2023-45142, CVE-2023-25151). Per-endpoint detail lives in ``mesh_state()`` instead.

Instruments (documented in docs/observability.md):

* ``http.client.request.duration`` (s, histogram, buckets 0.005-10): each attempt, until its
  response stream closed;
* ``http.client.active_requests`` (up-down counter): attempts in flight;
* ``mesh.client.call.duration`` (s, histogram): each logical call, retries included;
* ``mesh.client.retries`` (counter): retries and requeues, by ``mesh.retry.reason``;
* ``mesh.client.retry_budget.exhausted`` (counter);
* ``mesh.client.breaker.transitions`` (counter): by ``mesh.breaker.state``;
* ``mesh.client.endpoints`` (observable gauge): endpoints by ``mesh.endpoint.state``
  (healthy/ejected) per service;
* ``mesh.discovery.staleness`` (s, observable gauge): age of the last good answer, per service;
* ``mesh.discovery.updates`` (counter): endpoint-set changes applied, per service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics import _internal as _metrics_internal

__all__ = ["DURATION_BUCKETS", "MeshMetrics"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _installed() -> bool:
    # As in ``tracing``: the API's global, without ``get_meter_provider()``'s environment read.
    provider = getattr(_metrics_internal, "_METER_PROVIDER", None)
    if provider is None:
        return False
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


class MeshMetrics:
    """The instruments of one pipeline; ``observe`` supplies the per-service gauges."""

    def __init__(self, observe: Callable[[], Iterable[tuple[str, int, int, float]]]) -> None:
        meter = metrics.get_meter("meshlib")
        self._observe = observe
        self.attempt_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests (each attempt, to end of body).",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.active = meter.create_up_down_counter(
            "http.client.active_requests",
            unit="{request}",
            description="Number of outbound HTTP attempts in flight.",
        )
        self.call_duration = meter.create_histogram(
            "mesh.client.call.duration",
            unit="s",
            description="Duration of logical mesh calls, retries and backoff included.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.retries = meter.create_counter(
            "mesh.client.retries", unit="{retry}", description="Retries and requeues, by reason."
        )
        self.budget_exhausted = meter.create_counter(
            "mesh.client.retry_budget.exhausted",
            unit="{retry}",
            description="Retries or requeues refused by the retry budget.",
        )
        self.breaker = meter.create_counter(
            "mesh.client.breaker.transitions",
            unit="{transition}",
            description="Failure-accrual state changes, by new state.",
        )
        self.discovery_updates = meter.create_counter(
            "mesh.discovery.updates",
            unit="{update}",
            description="Endpoint-set changes applied from discovery.",
        )
        meter.create_observable_gauge(
            "mesh.client.endpoints",
            callbacks=[self._endpoints],
            unit="{endpoint}",
            description="Endpoints per service, by state (healthy or ejected).",
        )
        meter.create_observable_gauge(
            "mesh.discovery.staleness",
            callbacks=[self._staleness],
            unit="s",
            description="Seconds since discovery last answered, while it is failing.",
        )

    @staticmethod
    def enabled() -> bool:
        return _installed()

    def _endpoints(self, options: CallbackOptions) -> Iterable[Observation]:
        for service, healthy, ejected, _ in self._observe():
            yield Observation(healthy, {"mesh.service": service, "mesh.endpoint.state": "healthy"})
            yield Observation(ejected, {"mesh.service": service, "mesh.endpoint.state": "ejected"})

    def _staleness(self, options: CallbackOptions) -> Iterable[Observation]:
        for service, _, _, staleness in self._observe():
            yield Observation(staleness, {"mesh.service": service})

    @staticmethod
    def attrs(
        method: str, service: str, port: int, status: int | None, error: str | None
    ) -> dict[str, Any]:
        a: dict[str, Any] = {
            "http.request.method": method,
            "server.address": service,
            "server.port": port,
        }
        if status is not None:
            a["http.response.status_code"] = status
        if error is not None:
            a["error.type"] = error
        return a
