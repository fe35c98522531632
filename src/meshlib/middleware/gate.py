"""The admission gate both inbound middlewares share: the caller's key, the decision, the answer.

The ASGI and WSGI middlewares differ only in how they send a response and when a request ends;
who the caller is, whether it is admitted, what a refusal says and what is counted are decided
here once.

**Who the caller is.** ``caller_key(headers, request)`` (``request`` is the ASGI scope or the
WSGI environ, ``headers`` the request's headers with lower-case names) returns the key the rate
limit is kept under, or None for the shared anonymous bucket. The default key is the caller's
verified mTLS identity when Consul Connect's middleware runs in front (its SPIFFE URI, which it
puts in ``scope["meshlib.caller"]`` / ``environ["meshlib.caller"]``), else the value of the
configured caller header (``MESH_INBOUND_CALLER_HEADER``), else None. A header is a claim, not a
proof: per-caller limits that a caller cannot dodge need the verified identity. Keys are cut to
``MAX_KEY_CHARS`` and never logged, echoed or used as metric attributes.

**What a refusal says.** 429 (rate) and 503 (concurrency) carry ``Retry-After`` in whole
seconds, which meshlib's clients honour; 504 (deadline) carries none, since waiting cannot give
back time already spent. Every refusal carries ``x-mesh-rejected: rate|concurrency|deadline`` and
a one-line plain-text body, and never reaches the application.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.config import MeshConfig
from meshlib.limit.admission import Admission, AdmissionPolicy, Refusal, Ticket

__all__ = [
    "MAX_KEY_CHARS",
    "REJECTED_HEADER",
    "CallerKey",
    "Gate",
    "Inbound",
    "answer",
    "default_caller_key",
    "resolve_policy",
]

CallerKey = Callable[[Mapping[str, str], MutableMapping[str, Any]], "str | None"]
"""``caller_key(headers, request)``: the caller's rate-limit key, or None if unknown."""

MAX_KEY_CHARS = 256
REJECTED_HEADER = "x-mesh-rejected"


def default_caller_key(header: str | None) -> CallerKey:
    """Connect's verified caller if present, else the value of ``header`` (if configured)."""

    def key(headers: Mapping[str, str], request: MutableMapping[str, Any]) -> str | None:
        caller = request.get("meshlib.caller")
        uri = getattr(caller, "uri", None)
        if isinstance(uri, str) and uri:
            return uri[:MAX_KEY_CHARS]
        if header is not None:
            value = headers.get(header)
            if value:
                return value[:MAX_KEY_CHARS]
        return None

    return key


class Gate:
    """One middleware's admission: ``check`` a request, ``answer`` a refusal."""

    def __init__(
        self, policy: AdmissionPolicy, clock: Clock, caller_key: CallerKey | None = None
    ) -> None:
        self.policy = policy
        self.active = policy.limits or policy.shed_expired
        self.admission = Admission(policy, clock)
        self.caller_key = caller_key or default_caller_key(policy.caller_header)
        adm = self.admission
        # Imported when a middleware is built, not by ``import meshlib`` (OpenTelemetry's API
        # costs a cold start; a middleware reports to it, an idle import does not).
        from meshlib.otel.inbound import InboundMetrics

        self.metrics = InboundMetrics(lambda: (adm.in_flight, adm.limit))

    def mesh_state(self) -> dict[str, Any]:
        """``{"services": {}, "inbound": ...}``: the admission's counters and limits, in the
        shape the admin endpoint merges with the clients' ``mesh_state()``."""
        return {"services": {}, "inbound": self.admission.snapshot()}

    def check(
        self,
        headers: Mapping[str, str],
        request: MutableMapping[str, Any],
        budget: float | None,
    ) -> Ticket | Refusal | None:
        """None when admission is off; else the ticket of an admitted request or a refusal."""
        if not self.active:
            return None
        adm = self.admission
        # Shedding only (the default): no ticket and no count for a request that passes, so
        # the middleware costs next to nothing more than before it could shed.
        passes = budget is None or budget > self.policy.min_deadline
        if passes and not self.policy.limits:
            return None
        key = self.caller_key(headers, request) if adm.rate is not None else None
        result = adm.check(key, budget)
        if isinstance(result, Refusal):
            self.metrics.refused(result.reason)
        else:
            self.metrics.admitted()
        return result


def answer(refusal: Refusal) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status line, headers and body of a refusal."""
    body = (refusal.message + "\n").encode()
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        (REJECTED_HEADER, refusal.reason),
    ]
    if refusal.retry_after is not None:
        headers.append(("retry-after", str(refusal.retry_after)))
    return f"{refusal.status} {HTTPStatus(refusal.status).phrase}", headers, body


def resolve_policy(admission: AdmissionPolicy | None, config: MeshConfig | None) -> AdmissionPolicy:
    """The policy given, else the configuration's (``MESH_INBOUND_*`` when none is given)."""
    if admission is not None:
        return admission
    return (config if config is not None else MeshConfig.from_env()).inbound


class Inbound:
    """What the ASGI and WSGI middlewares share: their keywords and their admin state.

    ``admission`` overrides the configuration's ``inbound`` policy (``MESH_INBOUND_*``, read
    from the environment when no ``config`` is given); ``caller_key`` replaces the default
    caller key; ``clock`` drives the limits; ``propagate_override`` carries an incoming
    ``Mesh-Override`` to the mesh calls made while handling the request."""

    def __init__(
        self,
        app: Any,
        *,
        max_deadline: float = 3600.0,
        admission: AdmissionPolicy | None = None,
        config: MeshConfig | None = None,
        caller_key: CallerKey | None = None,
        clock: Clock = SYSTEM_CLOCK,
        propagate_override: bool = False,
    ) -> None:
        self.app = app
        self.max_deadline = max_deadline
        self.propagate_override = propagate_override
        self.gate = Gate(resolve_policy(admission, config), clock, caller_key)

    def mesh_state(self) -> dict[str, Any]:
        """What the admin endpoint shows for this middleware: its admission counters and
        limits (pass the middleware to ``meshlib.admin.start_admin`` beside the clients)."""
        return self.gate.mesh_state()
