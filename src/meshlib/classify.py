"""One response classifier: the single place that decides success, failure and retryability.

As in Finagle (``ResponseClassifier`` / ``ResponseClass``), the retry loop, the failure accrual,
the load balancer's failure score and the metrics all read the same verdict, so they never
disagree about what a 503 or a reset meant. A user replaces the classifier to change policy for
a service (treat 409 as retryable, 404 as success) and every layer follows.

The default follows the anchors: connection failures and timeouts fail and may be retried;
502/503/504 fail and may be retried (for idempotent calls; the retry layer checks that);
429 may be retried and marks the endpoint overloaded but does not count against its health;
every other status below 500 is a success for the endpoint, even when it is an error for the
caller; other 5xx fail without retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

__all__ = [
    "FAILURE",
    "OVERLOADED",
    "RETRYABLE_FAILURE",
    "SUCCESS",
    "Classifier",
    "ResponseClass",
    "default_classifier",
]


@dataclass(frozen=True, slots=True)
class ResponseClass:
    """A verdict on one attempt.

    ``failure`` counts against the endpoint (accrual, balancer score, success-rate metrics).
    ``retryable`` says the attempt may be tried again if the call is idempotent.
    ``overloaded`` says the endpoint asked for less traffic (429): the balancer backs off it.
    """

    failure: bool
    retryable: bool = False
    overloaded: bool = False
    reason: str = ""


SUCCESS = ResponseClass(failure=False, reason="success")
FAILURE = ResponseClass(failure=True, reason="failure")
RETRYABLE_FAILURE = ResponseClass(failure=True, retryable=True, reason="retryable")
OVERLOADED = ResponseClass(failure=False, retryable=True, overloaded=True, reason="overloaded")

Classifier = Callable[
    [httpx.Request, "httpx.Response | None", "BaseException | None"], ResponseClass
]
"""``classify(request, response, error)``: exactly one of ``response`` and ``error`` is set."""

_RETRYABLE_STATUS = frozenset({502, 503, 504})


def default_classifier(
    request: httpx.Request,
    response: httpx.Response | None,
    error: BaseException | None,
) -> ResponseClass:
    """Classify an attempt by the defaults described in the module docstring."""
    if response is None:
        if isinstance(error, httpx.TransportError):
            return RETRYABLE_FAILURE
        return FAILURE
    status = response.status_code
    if status < 500:
        return OVERLOADED if status == 429 else SUCCESS
    return RETRYABLE_FAILURE if status in _RETRYABLE_STATUS else FAILURE
