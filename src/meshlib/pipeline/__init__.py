"""The request pipeline: what happens to one mesh call, as two httpx transports.

httpx documents transports as its extension point, and httpx's own features (redirects, auth,
event hooks, cookies) run above them in ``Client.send``, so they keep working unchanged and
each redirect hop is routed anew. A host that is not a mesh name goes to the pass-through
transport untouched, with no mesh headers. A mesh call then passes these steps, outer to inner;
the order is deliberate (docs/concepts.md says why) and tested (tests/test_pipeline_order.py):

1. **Logical span** (INTERNAL, ``mesh <service>``), so backoff, deadline expiry and "no
   endpoints" are visible (``observe``).
2. **Total deadline** (config, ``@outbound``, ``extensions={"mesh": ...}`` or the incoming
   request's), above the retries so retries never outlive the caller (``call``); then the
   per-service rate and concurrency limits, which may wait only within it (``admission``).
3. **Retry loop**: budget deposit per call, withdrawal per retry or requeue, jittered backoff
   capped by the time left, ``Retry-After`` honoured; failures before the request was sent are
   requeued on another endpoint for any method, failures after it only for idempotent calls
   with a replayable body (``call``, with ``meshlib.retry``). The async driver may hedge the
   first attempt: a backup to another endpoint once the first is slow, first answer wins, the
   loser cancelled (``hedging`` decides, ``race`` runs it).
4. **Resolve + pick** inside the loop, so a retry goes to a different endpoint, skipping
   endpoints whose breaker is open before an attempt is spent on them (``meshlib.routing``).
5. **Failure accrual** records each attempt's classified outcome (``attempt``).
6. **Load tracking**: in flight from send until the response stream closes (``attempt``).
7. **Per-try timeout** (httpx's timeouts, capped by the per-try timeout and the time left),
   under accrual so that a timeout counts against the endpoint (``call``).
8. **Attempt span** (CLIENT) and its ``traceparent``; the deadline header (``observe``).
9. **URL rewrite** to the endpoint's host:port (``Host`` keeps the service name; for ``https``
   the service name is the TLS server name), then the inner transport (``exchange``).

``drivers`` holds the two loops (``AsyncMeshPipeline``, ``MeshPipeline``), which differ only in
``await``; ``base`` builds what they share from a ``PipelineSettings``. This package imports L0,
L1 and L2 packages, never the engine (``meshlib.transport`` hands one in) nor an entry module.
"""

from meshlib.pipeline.drivers import AsyncMeshPipeline, MeshPipeline
from meshlib.pipeline.settings import PipelineSettings

__all__ = ["AsyncMeshPipeline", "MeshPipeline", "PipelineSettings"]
