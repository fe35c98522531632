"""Limits: per-service outbound rate and concurrency limits (fixed, or adaptive by Vegas in
``adaptive``), and inbound admission.

Outbound, a token bucket and a concurrency bulkhead per called service (``limits``). Inbound,
the admission decision of the ASGI/WSGI middleware (``admission``): per-caller token buckets in
bounded memory (``keyed``), an in-flight limit that may follow latency by AIMD (``aimd``), and
the ``MESH_INBOUND_*`` policy read from a mapping handed in (``env``). All of it is I/O-free and
runs on the injected clock. Imports L0 modules only: L1.
"""

from typing import TYPE_CHECKING, Any

from meshlib import lazy

_EXPORTS = {
    "AdaptiveLimit": "adaptive",
    "AdaptivePolicy": "adaptive",
    "Admission": "admission",
    "AdmissionPolicy": "admission",
    "AimdLimit": "aimd",
    "ConcurrencyLimit": "limits",
    "KeyedRateLimit": "keyed",
    "LimitPolicy": "limits",
    "Permit": "adaptive",
    "RateLimit": "limits",
    "Refusal": "admission",
    "Ticket": "admission",
}

if TYPE_CHECKING:
    from meshlib.limit.adaptive import AdaptiveLimit, AdaptivePolicy, Permit
    from meshlib.limit.admission import Admission, AdmissionPolicy, Refusal, Ticket
    from meshlib.limit.aimd import AimdLimit
    from meshlib.limit.keyed import KeyedRateLimit
    from meshlib.limit.limits import ConcurrencyLimit, LimitPolicy, RateLimit

__all__ = [
    "AdaptiveLimit",
    "AdaptivePolicy",
    "Admission",
    "AdmissionPolicy",
    "AimdLimit",
    "ConcurrencyLimit",
    "KeyedRateLimit",
    "LimitPolicy",
    "Permit",
    "RateLimit",
    "Refusal",
    "Ticket",
]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
