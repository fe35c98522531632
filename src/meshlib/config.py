"""Configuration: the one place that reads ``os.environ``, validated up front.

``MeshConfig.from_env()`` turns ``MESH_*`` variables (and, for the discovery choice, the presence
of ``CONSUL_HTTP_ADDR``) into a frozen, validated ``MeshConfig``. A bad value fails at
construction with a ``ConfigError`` that names the variable, the value it got and what it
accepts, so a typo in a deployment fails at start, not at the first request. Values of variables
that may hold secrets are never echoed. Every variable is documented in docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from meshlib.accrual.health import AccrualPolicy
from meshlib.balance.balancer import BALANCERS
from meshlib.connect.settings import ConnectSettings, connect_settings_from_env
from meshlib.consul.settings import ConsulOptions, ConsulSettings
from meshlib.discovery.static import parse_services
from meshlib.endpoint import Endpoint
from meshlib.envparse import build as _build
from meshlib.envparse import parse_bool, parse_duration
from meshlib.envparse import parse_int as _int
from meshlib.envparse import parse_number as _number
from meshlib.envparse import shown as _shown
from meshlib.envpolicies import hedges_from_env, limits_from_env
from meshlib.errors import ConfigError
from meshlib.limit.limits import LimitPolicy
from meshlib.pipeline.settings import PipelineSettings
from meshlib.retry.budget import BudgetPolicy
from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy
from meshlib.retry.policy import RetryPolicy, exponential_wait
from meshlib.routing.locality import LocalityPolicy, locality_from_env

if TYPE_CHECKING:  # loaded when a configuration needs them: ``import meshlib`` does not
    from meshlib.consul.service import ServiceRegistration
    from meshlib.limit.admission import AdmissionPolicy

__all__ = ["ENGINES", "MeshConfig", "parse_duration"]

ENGINES = ("fast", "httpx")
MOCK_URLS = ("logical", "endpoint")
_DISCOVERIES = ("static", "consul")


def _parse_static_endpoints(name: str, value: str) -> dict[str, tuple[Endpoint, ...]]:
    """``users=127.0.0.1:8001,127.0.0.1:8002;orders=10.0.0.5:80``."""
    data: dict[str, list[str]] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        service, sep, endpoints = part.partition("=")
        if not sep or not service.strip():
            raise ConfigError(
                f"{name}: entry {part.strip()!r} must look like service=host:port[,host:port]; "
                "separate services with ';' (e.g. users=127.0.0.1:8001;orders=127.0.0.1:9000)"
            )
        data[service.strip()] = [e for e in endpoints.split(",") if e.strip()]
    try:
        return parse_services(data, name)
    except ValueError as exc:
        raise ConfigError(f"{exc} (expected service=host:port[,host:port];...)") from None


def _admission_policy() -> AdmissionPolicy:
    """The inbound defaults, built with the configuration: only the middleware reads them."""
    from meshlib.limit.admission import AdmissionPolicy

    return AdmissionPolicy()


@dataclass(frozen=True, kw_only=True, slots=True)
class MeshConfig:
    """Everything meshlib can be told; construct directly or with ``from_env``."""

    discovery: str = "static"
    """``static`` or ``consul`` (``MESH_DISCOVERY``)."""
    static_endpoints: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    """Declared services (``MESH_STATIC_ENDPOINTS``)."""
    static_file: str | None = None
    """JSON or TOML endpoints file, watched for changes (``MESH_STATIC_FILE``)."""
    static_poll_interval: float = 1.0
    """How often the file's mtime is checked, at most (``MESH_STATIC_POLL_INTERVAL``)."""
    balancer: str = "p2c-peak-ewma"
    """``p2c-peak-ewma``, ``p2c-least-loaded`` or ``round-robin`` (``MESH_BALANCER``)."""
    ewma_decay: float = 10.0
    """Peak-EWMA decay time in seconds (``MESH_EWMA_DECAY``)."""
    ewma_default_rtt: float = 0.030
    """Latency assumed for a new endpoint (``MESH_EWMA_DEFAULT_RTT``)."""
    passthrough_hosts: tuple[str, ...] = ()
    """Single-label hosts kept out of the mesh (``MESH_PASSTHROUGH_HOSTS``)."""
    propagate_hosts: tuple[str, ...] = ()
    """Pass-through hosts that may receive trace context (``MESH_PROPAGATE_HOSTS``)."""
    consul_domain: str = "consul"
    """The DNS domain of Consul-form names (``MESH_CONSUL_DOMAIN``)."""
    engine: str = "fast"
    """Inner HTTP engine for mesh endpoints: ``fast`` or ``httpx`` (``MESH_ENGINE``)."""
    mock_url: str = "logical"
    """What respx / pytest-httpx see: ``logical`` or ``endpoint`` URLs (``MESH_MOCK_URL``)."""
    timeout: float | None = None
    """Total deadline per call, above all retries (``MESH_TIMEOUT``); None = none."""
    per_try_timeout: float | None = None
    """Cap on each attempt's httpx timeouts (``MESH_PER_TRY_TIMEOUT``); None = httpx's own."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    accrual: AccrualPolicy = field(default_factory=AccrualPolicy)
    idempotency_key: bool = False
    """Attach one ``Idempotency-Key`` to all attempts of a POST (``MESH_IDEMPOTENCY_KEY``)."""
    propagate_deadline: bool = True
    """Send the remaining deadline to mesh services (``MESH_PROPAGATE_DEADLINE``)."""
    limits: Mapping[str, LimitPolicy] = field(default_factory=dict)
    """Per-service rate and concurrency limits (``MESH_RATE_LIMIT``, ``MESH_MAX_IN_FLIGHT``)."""
    inbound: AdmissionPolicy = field(default_factory=_admission_policy)
    """What the inbound middleware admits (``MESH_INBOUND_*``)."""
    hedges: Mapping[str, HedgePolicy] = field(default_factory=dict)
    """Per-service hedged (backup) requests (``MESH_HEDGE``, ``MESH_HEDGE_MIN_DELAY``)."""
    hedge_budget: HedgeBudgetPolicy = field(default_factory=HedgeBudgetPolicy)
    """The extra load hedges may add (``MESH_HEDGE_BUDGET_PERCENT``)."""
    locality: LocalityPolicy | None = None
    """Prefer the caller's zone (``MESH_ZONE``, ``MESH_ZONE_KEY``, ``MESH_ZONE_MIN_HEALTHY``)."""
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    """How to reach Consul (``CONSUL_*``, Go client rules)."""
    consul_options: ConsulOptions = field(default_factory=ConsulOptions)
    """How Consul is read (``MESH_CONSUL_*``, ``MESH_DISCOVERY_*``)."""
    connect: ConnectSettings = field(default_factory=ConnectSettings)
    """Consul Connect mutual TLS and this service's identity (``MESH_CONNECT_*``)."""
    otel_traces_exporter: str = "console"
    """Exporter ``meshlib.telemetry.configure()`` installs (``OTEL_TRACES_EXPORTER``)."""
    otel_metrics_exporter: str = "console"
    """Metric exporter for ``configure()`` (``OTEL_METRICS_EXPORTER``)."""
    registration: ServiceRegistration | None = None
    """This service's own registration (``MESH_SERVICE_*``), if ``MESH_SERVICE_NAME`` is set."""
    admin_addr: str | None = None
    """Where ``meshlib.admin.server`` listens, e.g. ``127.0.0.1:9990`` (``MESH_ADMIN_ADDR``)."""
    admin_token: str | None = field(default=None, repr=False)
    """Bearer token the admin endpoint requires (``MESH_ADMIN_TOKEN``); never shown."""

    def __post_init__(self) -> None:
        _one_of("MESH_DISCOVERY", self.discovery, _DISCOVERIES)
        _one_of("MESH_BALANCER", self.balancer, BALANCERS)
        _one_of("MESH_ENGINE", self.engine, ENGINES)
        _one_of("MESH_MOCK_URL", self.mock_url, MOCK_URLS)
        _positive("MESH_STATIC_POLL_INTERVAL", self.static_poll_interval)
        _positive("MESH_EWMA_DECAY", self.ewma_decay)
        _positive("MESH_EWMA_DEFAULT_RTT", self.ewma_default_rtt)
        if self.timeout is not None:
            _positive("MESH_TIMEOUT", self.timeout)
        if self.per_try_timeout is not None:
            _positive("MESH_PER_TRY_TIMEOUT", self.per_try_timeout)
        if self.connect.enabled and self.discovery != "consul":
            raise ConfigError(
                "MESH_CONNECT=true needs Consul discovery (MESH_DISCOVERY=consul or "
                "CONSUL_HTTP_ADDR): Connect endpoints, certificates and intentions come from it"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MeshConfig:
        """Read ``MESH_*`` (and ``CONSUL_HTTP_ADDR`` for the default discovery)."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        default_discovery = "consul" if env.get("CONSUL_HTTP_ADDR") else "static"
        kw["discovery"] = env.get("MESH_DISCOVERY", default_discovery).strip().lower()
        if "MESH_STATIC_ENDPOINTS" in env:
            kw["static_endpoints"] = _parse_static_endpoints(
                "MESH_STATIC_ENDPOINTS", env["MESH_STATIC_ENDPOINTS"]
            )
        if env.get("MESH_STATIC_FILE"):
            kw["static_file"] = env["MESH_STATIC_FILE"]
        for var, attr in _DURATIONS.items():
            if var in env:
                kw[attr] = parse_duration(var, env[var])
        for var, attr in _CHOICES.items():
            if var in env:
                kw[attr] = env[var].strip().lower()
        for var, attr in (
            ("MESH_PASSTHROUGH_HOSTS", "passthrough_hosts"),
            ("MESH_PROPAGATE_HOSTS", "propagate_hosts"),
        ):
            if var in env:
                kw[attr] = tuple(h.strip().lower() for h in env[var].split(",") if h.strip())
        if "MESH_CONSUL_DOMAIN" in env:
            kw["consul_domain"] = env["MESH_CONSUL_DOMAIN"].strip().lower() or "consul"
        for var, attr in _OPTIONAL_DURATIONS.items():
            if env.get(var, "").strip().lower() not in ("", "none", "off"):
                kw[attr] = parse_duration(var, env[var])
        for var, attr in _BOOLS.items():
            if var in env:
                kw[attr] = parse_bool(var, env[var])
        kw["retry"] = _retry_from_env(env)
        kw["budget"] = _build("MESH_RETRY_BUDGET_*", BudgetPolicy, _budget_kw(env))
        kw["accrual"] = _build("MESH_ACCRUAL_*", AccrualPolicy, _accrual_kw(env))
        kw["limits"] = limits_from_env(env)
        if any(var.startswith("MESH_INBOUND_") for var in env):
            from meshlib.limit.env import admission_from_env

            kw["inbound"] = admission_from_env(env, parse_bool, parse_duration, _number, _int)
        kw["locality"] = locality_from_env(env, _number, ConfigError)
        kw["hedges"] = hedges_from_env(env)
        if "MESH_HEDGE_BUDGET_PERCENT" in env:
            percent = _number("MESH_HEDGE_BUDGET_PERCENT", env["MESH_HEDGE_BUDGET_PERCENT"])
            kw["hedge_budget"] = _build(
                "MESH_HEDGE_BUDGET_PERCENT", HedgeBudgetPolicy, {"percent": percent / 100}
            )
        # The Consul parsers load only when Consul is in use: a static mesh never needs them.
        from_consul = kw["discovery"] == "consul" or env.get("MESH_SERVICE_NAME")
        if from_consul or "MESH_CONNECT" in env:
            from meshlib.consul.env import consul_settings_from_env

            kw["consul"] = consul_settings_from_env(env, parse_bool)
        if kw["discovery"] == "consul":
            from meshlib.consul.env import consul_options_from_env

            kw["consul_options"] = consul_options_from_env(env, parse_bool, parse_duration)
        for var, attr in (
            ("OTEL_TRACES_EXPORTER", "otel_traces_exporter"),
            ("OTEL_METRICS_EXPORTER", "otel_metrics_exporter"),
        ):
            if env.get(var):
                kw[attr] = env[var].split(",")[0].strip().lower()
        kw["connect"] = connect_settings_from_env(env, parse_bool, parse_duration)
        if env.get("MESH_SERVICE_NAME"):
            from meshlib.consul.env import registration_from_env

            reg = registration_from_env(env, parse_duration)
            if "MESH_SERVICE_CONNECT_NATIVE" in env:
                native = parse_bool(
                    "MESH_SERVICE_CONNECT_NATIVE", env["MESH_SERVICE_CONNECT_NATIVE"]
                )
                reg = dataclasses.replace(reg, connect_native=native)
            kw["registration"] = reg
        if env.get("MESH_ADMIN_ADDR", "").strip():
            kw["admin_addr"] = env["MESH_ADMIN_ADDR"].strip()
        if env.get("MESH_ADMIN_TOKEN", "").strip():
            kw["admin_token"] = env["MESH_ADMIN_TOKEN"].strip()
        return cls(**kw)

    def items(self) -> Iterator[tuple[str, object]]:
        """(field, value) pairs, for ``python -m meshlib config``."""
        for f in fields(self):
            yield f.name, getattr(self, f.name)

    def pipeline_settings(self) -> PipelineSettings:
        """The pipeline's settings from this configuration (its fields carry the same names)."""
        return PipelineSettings(**{f.name: getattr(self, f.name) for f in fields(PipelineSettings)})


_DURATIONS = {
    "MESH_STATIC_POLL_INTERVAL": "static_poll_interval",
    "MESH_EWMA_DECAY": "ewma_decay",
    "MESH_EWMA_DEFAULT_RTT": "ewma_default_rtt",
}
_CHOICES = {"MESH_BALANCER": "balancer", "MESH_ENGINE": "engine", "MESH_MOCK_URL": "mock_url"}
_OPTIONAL_DURATIONS = {"MESH_TIMEOUT": "timeout", "MESH_PER_TRY_TIMEOUT": "per_try_timeout"}
_BOOLS = {
    "MESH_IDEMPOTENCY_KEY": "idempotency_key",
    "MESH_PROPAGATE_DEADLINE": "propagate_deadline",
}


def _retry_from_env(env: Mapping[str, str]) -> RetryPolicy:
    kw: dict[str, Any] = {}
    if "MESH_MAX_ATTEMPTS" in env:
        kw["max_attempts"] = _int("MESH_MAX_ATTEMPTS", env["MESH_MAX_ATTEMPTS"])
        if not 1 <= kw["max_attempts"] <= 10:
            raise ConfigError(
                f"MESH_MAX_ATTEMPTS={kw['max_attempts']} must be within [1, 10] "
                "(1 turns retries off)"
            )
    base = env.get("MESH_RETRY_BACKOFF_BASE")
    cap = env.get("MESH_RETRY_BACKOFF_MAX")
    if base is not None or cap is not None:
        b = parse_duration("MESH_RETRY_BACKOFF_BASE", base) if base is not None else 0.025
        c = parse_duration("MESH_RETRY_BACKOFF_MAX", cap) if cap is not None else 0.25
        if c < b:
            raise ConfigError(
                f"MESH_RETRY_BACKOFF_MAX ({c:g}s) must be >= MESH_RETRY_BACKOFF_BASE ({b:g}s)"
            )
        kw["wait"] = exponential_wait(b, c)
    if "MESH_RETRY_AFTER_MAX" in env:
        kw["retry_after_max"] = parse_duration("MESH_RETRY_AFTER_MAX", env["MESH_RETRY_AFTER_MAX"])
    if "MESH_MAX_REPLAY_BYTES" in env:
        kw["max_replay_bytes"] = _int("MESH_MAX_REPLAY_BYTES", env["MESH_MAX_REPLAY_BYTES"])
    policy: RetryPolicy = _build("MESH_MAX_ATTEMPTS / MESH_RETRY_*", RetryPolicy, kw)
    return policy


def _budget_kw(env: Mapping[str, str]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "MESH_RETRY_BUDGET_PERCENT" in env:
        kw["percent"] = _number("MESH_RETRY_BUDGET_PERCENT", env["MESH_RETRY_BUDGET_PERCENT"]) / 100
    if "MESH_RETRY_BUDGET_MIN_PER_SEC" in env:
        v = env["MESH_RETRY_BUDGET_MIN_PER_SEC"]
        kw["min_per_sec"] = _number("MESH_RETRY_BUDGET_MIN_PER_SEC", v)
    if "MESH_RETRY_BUDGET_TTL" in env:
        kw["ttl"] = parse_duration("MESH_RETRY_BUDGET_TTL", env["MESH_RETRY_BUDGET_TTL"])
    return kw


def _accrual_kw(env: Mapping[str, str]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "MESH_ACCRUAL" in env:
        kw["enabled"] = parse_bool("MESH_ACCRUAL", env["MESH_ACCRUAL"])
    if "MESH_ACCRUAL_CONSECUTIVE_FAILURES" in env:
        v = env["MESH_ACCRUAL_CONSECUTIVE_FAILURES"]
        kw["consecutive_failures"] = _int("MESH_ACCRUAL_CONSECUTIVE_FAILURES", v)
    if "MESH_ACCRUAL_SUCCESS_RATE" in env:
        v = env["MESH_ACCRUAL_SUCCESS_RATE"]
        kw["success_rate"] = _number("MESH_ACCRUAL_SUCCESS_RATE", v) / 100
    if "MESH_ACCRUAL_WINDOW" in env:
        kw["window"] = parse_duration("MESH_ACCRUAL_WINDOW", env["MESH_ACCRUAL_WINDOW"])
    if "MESH_ACCRUAL_MIN_REQUESTS" in env:
        v = env["MESH_ACCRUAL_MIN_REQUESTS"]
        kw["min_requests"] = _int("MESH_ACCRUAL_MIN_REQUESTS", v)
    for var, attr in (
        ("MESH_ACCRUAL_BACKOFF_MIN", "backoff_min"),
        ("MESH_ACCRUAL_BACKOFF_MAX", "backoff_max"),
    ):
        if var in env:
            kw[attr] = parse_duration(var, env[var])
    if "MESH_MAX_EJECTION_PERCENT" in env:
        v = env["MESH_MAX_EJECTION_PERCENT"]
        kw["max_ejection_percent"] = _number("MESH_MAX_EJECTION_PERCENT", v)
    return kw


def _one_of(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(
            f"{name}={_shown(name, value)} is not accepted; use one of {', '.join(accepted)}"
        )


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} must be a positive finite number of seconds")
