"""``@meshlib.outbound``: a per-call policy for every mesh request made inside a function.

The decorator sets a ``CallPolicy`` (and a deadline, when ``timeout`` is given) in the context
for the duration of the call, so it reaches every mesh request made inside it, including those
made by a third-party SDK that was handed a meshlib client. It works on sync and async functions
alike. ``timeout`` is the function's *total* budget, shared by all its mesh calls and their
retries, like a context deadline in Go; an enclosing deadline (another ``@outbound`` or an
incoming request's) still wins when it is earlier.

``hedge`` turns hedged (backup) attempts on or off for the idempotent calls inside: ``True``
(the quantile default), ``False``, a fixed delay in seconds, ``"p99"`` or ``"40ms"``, or a
``HedgePolicy``; docs/hedging.md says when a backup is sent and what it costs.

The same options are available per request: ``client.get(url, extensions={"mesh": {...}})``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from meshlib.retry.budget import RetryBudget
from meshlib.retry.hedge import HedgePolicy
from meshlib.scope.context import CallPolicy, Deadline, deadline_scope, policy_scope

__all__ = ["outbound"]

P = ParamSpec("P")
R = TypeVar("R")


@overload
def outbound(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def outbound(
    *,
    timeout: float | None = None,
    per_try_timeout: float | None = None,
    retries: int | None = None,
    idempotent: bool | None = None,
    budget: RetryBudget | None = None,
    idempotency_key: bool | None = None,
    limit_wait: bool | None = None,
    hedge: HedgePolicy | bool | float | str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def outbound(
    func: Callable[..., Any] | None = None,
    /,
    *,
    timeout: float | None = None,
    per_try_timeout: float | None = None,
    retries: int | None = None,
    idempotent: bool | None = None,
    budget: RetryBudget | None = None,
    idempotency_key: bool | None = None,
    limit_wait: bool | None = None,
    hedge: HedgePolicy | bool | float | str | None = None,
) -> Any:
    """Decorate a sync or async function so its mesh calls follow this policy."""
    policy = CallPolicy(
        timeout=timeout,
        per_try_timeout=per_try_timeout,
        retries=retries,
        idempotent=idempotent,
        budget=budget,
        idempotency_key=idempotency_key,
        limit_wait=limit_wait,
        hedge=hedge,
    )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                deadline = Deadline.after(timeout) if timeout is not None else None
                with deadline_scope(deadline), policy_scope(policy):
                    return await fn(*args, **kwargs)

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            deadline = Deadline.after(timeout) if timeout is not None else None
            with deadline_scope(deadline), policy_scope(policy):
                return fn(*args, **kwargs)

        return run

    return decorate(func) if func is not None else decorate
