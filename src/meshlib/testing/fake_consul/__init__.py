"""FakeConsul: a faithful Consul HTTP API server on 127.0.0.1 for testing Consul clients.

Like moto for AWS, it is a real HTTP server that answers the agent, catalog, health, status and
KV endpoints the way a Consul agent in dev mode does (shapes, status codes, error texts, blocking
queries, indexes, ACL refusals), plus a Python API to arrange state and inject faults. Run it as
``with FakeConsul() as consul:``, via the ``fake_consul`` pytest fixture, or as a process with
``python -m meshlib.testing.fake_consul --port 8500``.

Where it knowingly differs from a real agent (each choice keeps tests deterministic or follows
the OSS edition):

* HTTP and TCP checks run (first probe at once, then every ``Interval``); script, Docker, gRPC,
  H2PING, UDP and OS-service checks are stored but never executed: they keep their registered
  status (``critical`` unless ``Status`` was given) until a test sets one.
* The catalog is updated synchronously (no anti-entropy delay), and output-only check updates
  are visible at once (a real agent may defer them by ``check_update_interval``).
* JSON is compact unless ``?pretty`` (a real ``-dev`` agent pretty-prints everything).
* OSS only: no ``Namespace``/``Partition`` fields; ``?ns=``/``?partition=`` other than
  ``default`` answer 400. One datacenter: any other ``?dc=`` answers 500 ``No path to
  datacenter``. No peering (``?peer=`` yields ``[]``), ``?near`` keeps the normal order.
* Sessions (``/v1/session/*``, KV ``?acquire``/``?release``, lock delays, TTLs) follow
  Consul's rules, but a session is invalidated only by ``destroy`` or its TTL, not by one of
  its checks turning critical.
* Not implemented: ``/v1/txn``, ``/v1/event``, ``/v1/acl``, ``/v1/query``, ``sidecar_service``
  expansion, gzip, ``?cached`` headers, DNS.
* Connect: a built-in CA (``connect_ca``) with real certificates on the wall clock, one root
  (no cross-signed intermediates on rotation), L4 intentions only; the CA needs
  ``cryptography`` (``meshlib[testing]``), imported on first use.
* ACLs are a token-to-``read``/``write`` map rather than policies and rules.
* Config entries: ``service-resolver``, ``-splitter`` and ``-router`` are validated and
  compiled into ``/v1/discovery-chain`` (``handlers_config``); ``service-defaults`` and
  ``proxy-defaults`` are stored as given, and a router or splitter does not first need a
  ``service-defaults`` entry with an HTTP protocol; other kinds answer 400.
"""

from __future__ import annotations

from .dispatch import RecordedRequest
from .server import FakeConsul, SupportsNow

__all__ = ["FakeConsul", "RecordedRequest", "SupportsNow"]
