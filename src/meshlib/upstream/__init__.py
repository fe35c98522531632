"""Small real HTTP/1.1 upstreams that misbehave on request, for the demo, tests and benchmarks.

A mesh client is only as testable as the services it talks to, and mocks at the transport layer
cannot show what real sockets do: keep-alive reuse, a slow tail, a burst of 503s with
``Retry-After``, a server that reads the request and never answers. ``UpstreamBehaviour`` says how
one upstream misbehaves; the server draws every random decision from one seeded
``random.Random`` so a test sees the same sequence of slow and failing requests on every run.

The same server runs three ways:

* ``async with Upstream(behaviour) as u`` inside the current event loop (async tests);
* ``with UpstreamThread(behaviour) as u`` on its own loop in a background thread (sync tests);
* ``python -m meshlib.upstream --name a --port 0 ...`` as a separate process, started with
  ``spawn_upstream(behaviour)``, so the demo and benchmarks do not share a CPU with the client.

Every response carries ``X-Upstream: <name>``. ``GET /echo`` (any method, any query) answers with a
JSON object describing the request: ``method``, ``path``, ``query``, ``headers`` (lower-cased
names), ``body_length``, ``server`` and ``peer_port`` (the client's source port, which tells
connection reuse apart from new connections). Any other path answers with the configured body.

``/control`` is the management endpoint, exempt from the behaviour and from the request counters:

* ``GET /control`` returns ``{"behaviour": {...}, "stats": {...}}``;
* ``POST /control`` with a JSON object of behaviour fields (``{"fail_fraction": 1.0}``; ``body`` is
  a UTF-8 string) replaces those fields, keeps the others, and returns the same document;
  ``"reset_stats": true`` zeroes the counters. An invalid document gets a 400 with
  ``{"error": "..."}`` and leaves the behaviour unchanged.

This is how a parent flips a subprocess upstream to failing mid-run; ``SpawnedUpstream.control``
and ``SpawnedUpstream.set_behaviour`` wrap it.
"""

from meshlib.upstream.behaviour import UpstreamBehaviour, UpstreamStats
from meshlib.upstream.cli import main
from meshlib.upstream.server import Upstream, UpstreamThread
from meshlib.upstream.spawn import SpawnedUpstream, behaviour_to_argv, spawn_upstream

__all__ = [
    "SpawnedUpstream",
    "Upstream",
    "UpstreamBehaviour",
    "UpstreamStats",
    "UpstreamThread",
    "behaviour_to_argv",
    "main",
    "spawn_upstream",
]
