"""Per-service outbound limits: a token-bucket rate limit and a concurrency bulkhead.

Imports L0 modules only: L1.
"""

from meshlib.limit.limits import (
    ConcurrencyLimit,
    LimitPolicy,
    RateLimit,
)

__all__ = [
    "ConcurrencyLimit",
    "LimitPolicy",
    "RateLimit",
]
