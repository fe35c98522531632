"""The request extension keys meshlib's layers agree on, so no layer imports another for a name.

httpx carries per-request data between a client and its transports in ``request.extensions``;
meshlib uses a few keys of its own. The pipeline writes them and the engine or the pipeline reads
them, so the names live here, in L0, rather than in either layer.
"""

from __future__ import annotations

__all__ = ["ATTEMPT_HEADERS", "DEADLINE", "POLICY", "PREFETCH"]

POLICY = "mesh"
"""Per-request options (a ``CallPolicy`` or a dict); on a response, which endpoint answered."""

PREFETCH = "mesh_prefetch"
"""Set by the mesh clients when the caller does not stream: the body is read inside the retry
loop, where a reset mid-body can still be retried."""

DEADLINE = "mesh_deadline"
"""The attempt's absolute deadline on ``time.monotonic()``, for the engines to bound it by."""

ATTEMPT_HEADERS = "mesh_attempt_headers"
"""Headers for one attempt only (deadline, trace context), which meshlib's engine writes on the
wire in place of any header of the same name, so the caller's request is never changed."""
