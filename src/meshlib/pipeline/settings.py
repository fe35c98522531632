"""What a pipeline is built from: the policies, as one frozen settings object.

``MeshConfig.pipeline_settings()`` produces it from the environment; code that builds a pipeline
by hand passes one directly. It holds values only: the objects a pipeline talks to (discovery,
the inner transports, clock, randomness) are handed to the pipeline beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshlib.accrual.health import AccrualPolicy
from meshlib.limit.limits import LimitPolicy
from meshlib.retry.budget import BudgetPolicy
from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy
from meshlib.retry.policy import RetryPolicy
from meshlib.routing.locality import LocalityPolicy

__all__ = ["CallSettings", "PipelineSettings"]


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """The policies of one pipeline (each field is documented on ``MeshConfig``)."""

    balancer: str = "p2c-peak-ewma"
    ewma_decay: float = 10.0
    ewma_default_rtt: float = 0.030
    passthrough_hosts: tuple[str, ...] = ()
    propagate_hosts: tuple[str, ...] = ()
    consul_domain: str = "consul"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    accrual: AccrualPolicy = field(default_factory=AccrualPolicy)
    timeout: float | None = None
    per_try_timeout: float | None = None
    idempotency_key: bool = False
    propagate_deadline: bool = True
    limits: Mapping[str, LimitPolicy] = field(default_factory=dict)
    mock_url: str = "logical"
    hedges: Mapping[str, HedgePolicy] = field(default_factory=dict)
    hedge_budget: HedgeBudgetPolicy = field(default_factory=HedgeBudgetPolicy)
    locality: LocalityPolicy | None = None


@dataclass(frozen=True, kw_only=True)
class CallSettings:
    """The configured defaults a ``Call`` starts from (``CallPolicy`` overrides them)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    per_try_timeout: float | None = None
    idempotency_key: bool = False
    propagate_deadline: bool = True
