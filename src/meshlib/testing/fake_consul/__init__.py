"""FakeConsul: a faithful Consul HTTP API server on 127.0.0.1 for testing Consul clients.

Like moto for AWS, it is a real HTTP server that answers the agent, catalog, health, status and
KV endpoints the way a Consul agent in dev mode does (shapes, status codes, error texts, blocking
queries, indexes, ACL refusals), plus a Python API to arrange state and inject faults. Run it as
``with FakeConsul() as consul:``, via the ``fake_consul`` pytest fixture, or as a process with
``python -m meshlib.testing.fake_consul --port 8500``.
"""

from __future__ import annotations

from .dispatch import RecordedRequest
from .server import FakeConsul, SupportsNow

__all__ = ["FakeConsul", "RecordedRequest", "SupportsNow"]
