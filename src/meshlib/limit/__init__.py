"""Per-service outbound limits: a token-bucket rate limit, a concurrency bulkhead and an
adaptive concurrency limit (Vegas, ``adaptive``).

Imports L0 modules only: L1.
"""

from meshlib.limit.adaptive import (
    AdaptiveLimit,
    AdaptivePolicy,
    Permit,
)
from meshlib.limit.limits import (
    ConcurrencyLimit,
    LimitPolicy,
    RateLimit,
)

__all__ = [
    "AdaptiveLimit",
    "AdaptivePolicy",
    "ConcurrencyLimit",
    "LimitPolicy",
    "Permit",
    "RateLimit",
]
