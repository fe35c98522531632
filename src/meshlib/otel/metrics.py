"""OpenTelemetry metrics for the mesh: the HTTP client conventions plus what the mesh did.

Only the global metrics API is used; meshlib never installs a provider, and while none is
installed each recording is skipped after one type check. Attributes are low-cardinality only:
method, service name and port, status code, ``error.type``, reason or state. Never a URL or a
peer address: per-endpoint label sets grow without bound and have caused real outages
(CVE-2023-45142, CVE-2023-25151). Per-endpoint detail lives in ``mesh_state()`` instead.

Instruments (documented in docs/observability.md):

* ``http.client.request.duration`` (s, histogram, buckets 0.005-10): each attempt, until its
  response stream closed;
* ``http.client.active_requests`` (observable up-down counter): attempts in flight;
* ``mesh.client.call.duration`` (s, histogram): each logical call, retries included;
* ``mesh.client.retries`` (counter): retries and requeues, by ``mesh.retry.reason``;
* ``mesh.client.retry_budget.exhausted`` (counter);
* ``mesh.client.hedges`` (counter): hedged (backup) attempts, by ``mesh.hedge.outcome``
  (``won``: the backup answered first; ``lost``: the original did; ``budget_exhausted``: a
  backup was due but the budget refused it);
* ``mesh.client.breaker.transitions`` (counter): by ``mesh.breaker.state``;
* ``mesh.client.endpoints`` (observable gauge): endpoints by ``mesh.endpoint.state``
  (healthy/ejected) per service;
* ``mesh.client.concurrency_limit`` (observable gauge): the adaptive concurrency limit per
  service, where one is configured (several clients of one service: the smallest);
* ``mesh.discovery.staleness`` (s, observable gauge): age of the last good answer, per service;
* ``mesh.discovery.updates`` (counter): endpoint-set changes applied, per service.

Cost with an SDK installed: each synchronous measurement costs the SDK several microseconds,
most of it spent cleaning and hashing the attribute set, so the per-request path makes exactly
two (the attempt's and the call's duration) and passes attribute dicts built once per distinct
set. Attempts in flight are counted in a plain dict and reported by an observable counter at
collection time, which is what the SDK would aggregate anyway.

Observable instruments are registered once per process: the SDK keeps the first callback
registered under a name and silently drops later ones, so one callback reports every live
client (``_LIVE``) instead of only the first client created.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics import _internal as _metrics_internal

__all__ = ["DURATION_BUCKETS", "MeshMetrics"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

Gauges = Callable[[], Iterable[tuple[str, int, int, float]]]
"""(service, healthy, ejected, staleness seconds) per service of one client."""
Limits = Callable[[], Iterable[tuple[str, int]]]
"""(service, adaptive concurrency limit) per service of one client that has one."""

_LIVE: weakref.WeakSet[MeshMetrics] = weakref.WeakSet()
# Clients are created and closed on any thread while a periodic reader runs the callbacks on its
# own: WeakSet only defers removals made by the garbage collector, so add/discard and the
# snapshot the callbacks take must not interleave ("Set changed size during iteration").
_LIVE_LOCK = threading.Lock()
_ATTR_CACHE_LIMIT = 4096
_AttrKey = tuple[str, str, int | None, int | None, str | None]


def _installed() -> bool:
    # As in ``tracing``: the API's global, without ``get_meter_provider()``'s environment read.
    provider = getattr(_metrics_internal, "_METER_PROVIDER", None)
    if provider is None:
        return False
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def _live() -> list[MeshMetrics]:
    with _LIVE_LOCK:
        return list(_LIVE)


def _active_requests(options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[tuple[str, str, int], int] = {}
    for m in _live():
        with m._flight_lock:
            counts = list(m.in_flight.items())
        for key, n in counts:
            totals[key] = totals.get(key, 0) + n
    for (method, service, port), n in totals.items():
        yield Observation(
            n, {"http.request.method": method, "server.address": service, "server.port": port}
        )


def _services() -> dict[str, tuple[int, int, float]]:
    # Two clients that call the same service each see its endpoints; report one view (the
    # larger count, the worse staleness) rather than adding them up.
    merged: dict[str, tuple[int, int, float]] = {}
    for m in _live():
        for service, healthy, ejected, stale in m.gauges():
            seen = merged.get(service)
            if seen is not None:
                healthy = max(healthy, seen[0])
                ejected = max(ejected, seen[1])
                stale = max(stale, seen[2])
            merged[service] = (healthy, ejected, stale)
    return merged


def _endpoints(options: CallbackOptions) -> Iterable[Observation]:
    for service, (healthy, ejected, _) in _services().items():
        yield Observation(healthy, {"mesh.service": service, "mesh.endpoint.state": "healthy"})
        yield Observation(ejected, {"mesh.service": service, "mesh.endpoint.state": "ejected"})


def _concurrency_limits(options: CallbackOptions) -> Iterable[Observation]:
    merged: dict[str, int] = {}
    for m in _live():
        for service, limit in m.limits():
            merged[service] = min(limit, merged.get(service, limit))
    for service, limit in merged.items():
        yield Observation(limit, {"mesh.service": service})


def _no_limits() -> Iterable[tuple[str, int]]:
    return ()


def _staleness(options: CallbackOptions) -> Iterable[Observation]:
    for service, (_, _, stale) in _services().items():
        yield Observation(stale, {"mesh.service": service})


class MeshMetrics:
    """The instruments of one pipeline; ``gauges`` supplies its per-service gauge values and
    ``limits`` its adaptive concurrency limits."""

    def __init__(self, gauges: Gauges, limits: Limits = _no_limits) -> None:
        meter = metrics.get_meter("meshlib")
        self.gauges = gauges
        self.limits = limits
        self.in_flight: dict[tuple[str, str, int], int] = {}
        """Attempts in flight by (method, service, port), read by the observable counter."""
        self._flight_lock = threading.Lock()
        self._attrs: dict[_AttrKey, Mapping[str, Any]] = {}
        self.attempt_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests (each attempt, to end of body).",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
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
        self.hedges = meter.create_counter(
            "mesh.client.hedges",
            unit="{request}",
            description="Hedged (backup) attempts, by outcome.",
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
        # Registered under the same names by every client: the SDK keeps the first (and the
        # API's proxy meter forwards each), and each callback reports all live clients.
        meter.create_observable_up_down_counter(
            "http.client.active_requests",
            callbacks=[_active_requests],
            unit="{request}",
            description="Number of outbound HTTP attempts in flight.",
        )
        meter.create_observable_gauge(
            "mesh.client.endpoints",
            callbacks=[_endpoints],
            unit="{endpoint}",
            description="Endpoints per service, by state (healthy or ejected).",
        )
        meter.create_observable_gauge(
            "mesh.client.concurrency_limit",
            callbacks=[_concurrency_limits],
            unit="{request}",
            description="The adaptive concurrency limit of each service that has one.",
        )
        meter.create_observable_gauge(
            "mesh.discovery.staleness",
            callbacks=[_staleness],
            unit="s",
            description="Seconds since discovery last answered, while it is failing.",
        )
        with _LIVE_LOCK:
            _LIVE.add(self)

    @staticmethod
    def enabled() -> bool:
        return _installed()

    def close(self) -> None:
        """The client closed: its services stop being reported."""
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def attempt_started(self, key: tuple[str, str, int]) -> None:
        # Locked: a read-modify-write of a dict entry is not guaranteed atomic (it happens not
        # to interleave under CPython 3.11's GIL, but free-threaded builds give no such luck),
        # and a reported count, unlike a balancing heuristic, must never drift.
        with self._flight_lock:
            self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def attempt_ended(self, key: tuple[str, str, int]) -> None:
        with self._flight_lock:
            self.in_flight[key] -= 1

    def attrs(
        self, method: str, service: str, port: int | None, status: int | None, error: str | None
    ) -> Mapping[str, Any]:
        """The attribute set of one attempt, or of one logical call (``port`` None: no
        ``server.port``), built once per distinct set and then reused (the SDK copies what it
        keeps, so sharing the dict is safe)."""
        key = (method, service, port, status, error)
        found = self._attrs.get(key)
        if found is not None:
            return found
        a: dict[str, Any] = {"http.request.method": method, "server.address": service}
        if port is not None:
            a["server.port"] = port
        if status is not None:
            a["http.response.status_code"] = status
        if error is not None:
            a["error.type"] = error
        if len(self._attrs) < _ATTR_CACHE_LIMIT:
            self._attrs[key] = a
        return a
