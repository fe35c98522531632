"""Failure accrual: each endpoint's alive / dead / probing state, with exactly one probe.

Finagle's FailureAccrual (consecutive failures or success rate, jittered mark-dead backoff) on a
monotonic clock. Imports nothing from meshlib: L1, I/O-free.
"""

from meshlib.accrual.health import (
    AccrualPolicy,
    EndpointHealth,
    HealthGroup,
)

__all__ = [
    "AccrualPolicy",
    "EndpointHealth",
    "HealthGroup",
]
