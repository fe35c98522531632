"""OpenTelemetry instruments of the inbound middleware: what admission let in, refused and shed.

Kept beside ``metrics`` (the client's instruments) rather than inside it because a server that
only receives needs none of the client's, and the client none of these. The same rules hold:
only the global metrics API, nothing recorded while no provider is installed (one check), fixed
low-cardinality attributes only. The caller key is never an attribute: keys come from callers,
and a label set a caller can grow without bound is the outage those rules prevent.

Instruments (documented in docs/observability.md):

* ``mesh.server.admission`` (counter): one per request that met the middleware's admission, by
  ``mesh.admission.outcome`` (``admitted``, ``rejected``, ``shed``) and, when not admitted,
  ``mesh.admission.reason`` (``rate``, ``concurrency``, ``deadline``); ``admitted`` only when a
  rate or in-flight limit is configured (shedding alone does no per-request bookkeeping);
* ``mesh.server.active_requests`` (observable up-down counter): admitted requests in the
  application now, over every middleware with an in-flight limit in the process;
* ``mesh.server.concurrency_limit`` (observable gauge): their in-flight limits, summed (it moves
  when the limit is adaptive).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from meshlib.otel.metrics import MeshMetrics

__all__ = ["InboundMetrics"]

State = Callable[[], tuple[int, int | None]]
"""(requests in flight, in-flight limit or None) of one middleware."""

_OUTCOME = {"rate": "rejected", "concurrency": "rejected", "deadline": "shed"}
_ADMITTED: Mapping[str, Any] = {"mesh.admission.outcome": "admitted"}
_REFUSED: dict[str, Mapping[str, Any]] = {
    reason: {"mesh.admission.outcome": outcome, "mesh.admission.reason": reason}
    for reason, outcome in _OUTCOME.items()
}

_LIVE: weakref.WeakSet[InboundMetrics] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _states() -> list[tuple[int, int | None]]:
    with _LIVE_LOCK:
        live = list(_LIVE)
    return [m.state() for m in live]


def _active(options: CallbackOptions) -> Iterable[Observation]:
    states = [s for s in _states() if s[1] is not None]
    if states:
        yield Observation(sum(n for n, _ in states))


def _limit(options: CallbackOptions) -> Iterable[Observation]:
    limits = [lim for _, lim in _states() if lim is not None]
    if limits:
        yield Observation(sum(limits))


class InboundMetrics:
    """The admission counters of one middleware; ``state`` supplies its in-flight gauges."""

    def __init__(self, state: State) -> None:
        meter = metrics.get_meter("meshlib")
        self.state = state
        self.decisions = meter.create_counter(
            "mesh.server.admission",
            unit="{request}",
            description="Inbound requests by admission outcome (admitted, rejected, shed).",
        )
        meter.create_observable_up_down_counter(
            "mesh.server.active_requests",
            callbacks=[_active],
            unit="{request}",
            description="Admitted inbound requests in the application now.",
        )
        meter.create_observable_gauge(
            "mesh.server.concurrency_limit",
            callbacks=[_limit],
            unit="{request}",
            description="The inbound in-flight limit (it moves when adaptive).",
        )
        with _LIVE_LOCK:
            _LIVE.add(self)

    def admitted(self) -> None:
        if MeshMetrics.enabled():
            self.decisions.add(1, _ADMITTED)

    def refused(self, reason: str) -> None:
        if MeshMetrics.enabled():
            self.decisions.add(1, _REFUSED[reason])
