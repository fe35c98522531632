"""Prometheus text exposition (format 0.0.4) of a ``mesh_state()`` snapshot, for ``/mesh/metrics``.

The admin endpoint renders the same snapshot the JSON and the dashboard show, so a scrape and a
look at the page never disagree. Endpoint addresses are label values here on purpose: this is a
local scrape endpoint for one process, where "which replica is slow" is the question, not an
OpenTelemetry metric stream whose cardinality must stay bounded across a fleet (meshlib's OTel
instruments keep peer addresses out of their attributes for that reason). A value the snapshot
does not have (no latency sample yet, a balancer without EWMA) is left out rather than exported
as a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "escape_label_value", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATES = ("alive", "failing", "dead", "probing")

_Getter = Callable[[Mapping[str, Any]], Any]


def _ms_to_s(key: str) -> _Getter:
    def get(d: Mapping[str, Any]) -> Any:
        v = d.get(key)
        return None if v is None else round(float(v) / 1000.0, 9)

    return get


def _adaptive(service: Mapping[str, Any]) -> Mapping[str, Any]:
    """The service's adaptive limit state, or an empty mapping without one."""
    return (service.get("limits") or {}).get("adaptive") or {}


def _key(key: str) -> _Getter:
    return lambda d: d.get(key)


# (name, type, help, value): one family per row, in the order they are exposed.
_ENDPOINT_FAMILIES: tuple[tuple[str, str, str, _Getter], ...] = (
    (
        "meshlib_endpoint_requests_total",
        "counter",
        "Attempts sent to the endpoint (each retry counts).",
        _key("requests"),
    ),
    (
        "meshlib_endpoint_failures_total",
        "counter",
        "Attempts to the endpoint the classifier counted as failures.",
        _key("failures"),
    ),
    (
        "meshlib_endpoint_in_flight",
        "gauge",
        "Requests to the endpoint in flight now.",
        _key("in_flight"),
    ),
    (
        "meshlib_endpoint_ewma_seconds",
        "gauge",
        "Peak-EWMA latency the balancer uses for the endpoint.",
        _ms_to_s("ewma_ms"),
    ),
    (
        "meshlib_endpoint_success_rate",
        "gauge",
        "Success rate in the failure-accrual window (0 to 1).",
        _key("success_rate"),
    ),
    (
        "meshlib_endpoint_next_probe_seconds",
        "gauge",
        "Seconds until an ejected endpoint is probed again (0 unless dead).",
        _key("next_probe_in_s"),
    ),
)

_SERVICE_FAMILIES: tuple[tuple[str, str, str, _Getter], ...] = (
    (
        "meshlib_retry_budget_balance",
        "gauge",
        "Retries the service's budget would allow now.",
        lambda s: (s.get("budget") or {}).get("balance"),
    ),
    (
        "meshlib_retry_budget_exhausted_total",
        "counter",
        "Retries refused because the service's retry budget was empty.",
        lambda s: (s.get("budget") or {}).get("exhausted"),
    ),
    (
        "meshlib_deadline_exceeded_total",
        "counter",
        "Calls to the service that ran out of their total deadline (DeadlineExceeded).",
        lambda s: (s.get("deadlines") or {}).get("exceeded"),
    ),
    (
        "meshlib_concurrency_limit",
        "gauge",
        "The adaptive concurrency limit (Vegas) of the service, where one is configured.",
        lambda s: _adaptive(s).get("limit"),
    ),
    (
        "meshlib_concurrency_limit_in_flight",
        "gauge",
        "Calls to the service admitted by its adaptive limit and not yet finished.",
        lambda s: _adaptive(s).get("in_flight"),
    ),
    (
        "meshlib_concurrency_limit_refused_total",
        "counter",
        "Calls refused at once (RateLimited) because the adaptive limit was reached.",
        lambda s: _adaptive(s).get("refused"),
    ),
    (
        "meshlib_hedges_total",
        "counter",
        "Hedged (backup) attempts sent to the service.",
        lambda s: (s.get("hedge") or {}).get("sent"),
    ),
    (
        "meshlib_hedges_won_total",
        "counter",
        "Hedged attempts that answered before the original.",
        lambda s: (s.get("hedge") or {}).get("won"),
    ),
    (
        "meshlib_hedges_budget_refused_total",
        "counter",
        "Hedged attempts that were due but refused by the hedge or retry budget.",
        lambda s: (s.get("hedge") or {}).get("budget_refused"),
    ),
    (
        "meshlib_discovery_staleness_seconds",
        "gauge",
        "Age of the endpoint list when discovery is serving stale data (0 when fresh).",
        _key("staleness_s"),
    ),
    (
        "meshlib_discovery_stale",
        "gauge",
        "1 while discovery serves a last-known endpoint list it could not refresh.",
        _key("stale"),
    ),
    (
        "meshlib_service_panic",
        "gauge",
        "1 while more than half the endpoints are ejected and the balancer ignores health.",
        _key("panic"),
    ),
    (
        "meshlib_service_dead_endpoints",
        "gauge",
        "Endpoints of the service that are not alive (dead or probing).",
        _key("dead"),
    ),
)


def escape_label_value(value: str) -> str:
    r"""A label value as the text format needs it: ``\``, ``"`` and newlines escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str | None:
    """The sample value, or None when there is nothing to export."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


class _Out:
    """Collects lines; a family's HELP/TYPE header is written only if it has samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[str]) -> None:
        if not samples:
            return
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.extend(samples)


def _endpoints(services: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for service, svc in services.items():
        for ep in svc.get("endpoints") or ():
            yield service, ep


def render_prometheus(state: Mapping[str, Any]) -> str:
    """The snapshot as Prometheus text: every family grouped, with HELP and TYPE lines."""
    services: Mapping[str, Any] = state.get("services") or {}
    out = _Out()
    for name, kind, help_text, get in _ENDPOINT_FAMILIES:
        samples = []
        for service, ep in _endpoints(services):
            value = _number(get(ep))
            if value is not None:
                labels = _labels((("service", service), ("endpoint", str(ep.get("address")))))
                samples.append(f"{name}{labels} {value}")
        out.family(name, kind, help_text, samples)
    samples = []
    for service, ep in _endpoints(services):
        for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            value = _number(_ms_to_s(key)(ep))
            if value is not None:
                pairs = (
                    ("service", service),
                    ("endpoint", str(ep.get("address"))),
                    ("quantile", q),
                )
                samples.append(f"meshlib_endpoint_latency_seconds{_labels(pairs)} {value}")
    out.family(
        "meshlib_endpoint_latency_seconds",
        "gauge",
        "Latency quantiles over the endpoint's recent-stats window (a sliding window, so a "
        "gauge per quantile rather than a summary with _sum and _count).",
        samples,
    )
    samples = []
    for service, ep in _endpoints(services):
        current = ep.get("state", "alive")
        for st in _STATES:
            pairs = (("service", service), ("endpoint", str(ep.get("address"))), ("state", st))
            samples.append(f"meshlib_endpoint_state{_labels(pairs)} {int(current == st)}")
    out.family(
        "meshlib_endpoint_state",
        "gauge",
        "Failure-accrual state of the endpoint (failing: alive but failing in a row): "
        "1 for the current state, 0 for the others.",
        samples,
    )
    for name, kind, help_text, get in _SERVICE_FAMILIES:
        samples = []
        for service, svc in services.items():
            value = _number(get(svc))
            if value is not None:
                samples.append(f"{name}{_labels((('service', service),))} {value}")
        out.family(name, kind, help_text, samples)
    _connect(out, state.get("connect"))
    _traffic(out, state.get("traffic") or {})
    _inbound(out, state)
    return "\n".join(out.lines) + "\n" if out.lines else ""


def _connect(out: _Out, conn: Any) -> None:
    """This process's Connect identity: how long its leaf has left, rotations and errors."""
    if not isinstance(conn, Mapping):
        return
    labels = _labels((("service", str(conn.get("service"))),))
    for name, kind, key, help_text in (
        (
            "meshlib_connect_leaf_expires_in_seconds",
            "gauge",
            "leaf_expires_in_s",
            "Seconds until this service's Connect leaf certificate expires (it is renewed by "
            "the agent well before; a value near 0 means renewal is failing).",
        ),
        (
            "meshlib_connect_rotations_total",
            "counter",
            "rotations",
            "Leaf or root changes installed without a restart.",
        ),
        (
            "meshlib_connect_errors_total",
            "counter",
            "errors",
            "Failed reads of the agent's Connect endpoints (the last good certificates are kept).",
        ),
    ):
        value = _number(conn.get(key))
        out.family(name, kind, help_text, [f"{name}{labels} {value}"] if value is not None else [])


def _traffic(out: _Out, traffic: Mapping[str, Any]) -> None:
    """Per service with a discovery chain: the features meshlib does not honour in it."""
    samples = []
    for service, entry in traffic.items():
        chain = entry.get("chain") if isinstance(entry, Mapping) else None
        if isinstance(chain, Mapping):
            labels = _labels((("service", service),))
            samples.append(f"meshlib_traffic_unsupported{labels} {len(chain.get('problems', []))}")
    out.family(
        "meshlib_traffic_unsupported",
        "gauge",
        "Features of the service's discovery chain that meshlib does not honour (each is "
        "logged once and listed in mesh_state's traffic section; the rest of the chain applies).",
        samples,
    )


def _inbound(out: _Out, state: Mapping[str, Any]) -> None:
    """The inbound middlewares' admission (``inbound``, ``inbound#2``, ...), one label each."""
    sections = [(k, v) for k, v in state.items() if k.split("#")[0] == "inbound"]
    sections = [(k, v) for k, v in sections if isinstance(v, Mapping)]
    if not sections:
        return
    outcomes: list[str] = []
    in_flight: list[str] = []
    limits: list[str] = []
    for key, inb in sections:
        mw = (("middleware", key),)
        admitted = _number(inb.get("admitted"))
        if admitted is not None:
            pairs = (*mw, ("outcome", "admitted"), ("reason", ""))
            outcomes.append(f"meshlib_inbound_requests_total{_labels(pairs)} {admitted}")
        for outcome, group in (("rejected", inb.get("rejected")), ("shed", inb.get("shed"))):
            for reason, count in (group or {}).items():
                value = _number(count)
                if value is not None:
                    pairs = (*mw, ("outcome", outcome), ("reason", str(reason)))
                    outcomes.append(f"meshlib_inbound_requests_total{_labels(pairs)} {value}")
        for into, field in ((in_flight, "in_flight"), (limits, "limit")):
            value = _number(inb.get(field))
            if value is not None:
                into.append(f"meshlib_inbound_{field}{_labels(mw)} {value}")
    out.family(
        "meshlib_inbound_requests_total",
        "counter",
        "Inbound requests by the middleware's decision: admitted, rejected (rate: 429, "
        "concurrency: 503) or shed (deadline: 504), before the application runs.",
        outcomes,
    )
    out.family(
        "meshlib_inbound_in_flight", "gauge", "Inbound requests in the application now.", in_flight
    )
    out.family(
        "meshlib_inbound_limit",
        "gauge",
        "The inbound in-flight limit (it moves when adaptive), where one is configured.",
        limits,
    )
