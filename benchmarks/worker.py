"""Entry point of one measurement process: ``python -m benchmarks.worker '<json spec>'``.

Why a fresh process per variant and round: an interpreter that has already run another client
carries its allocator state, warmed caches and imported modules; a fresh one measures each
variant from the same starting point. The parent (``benchmarks.runner``) starts this module,
passes a JSON spec naming the measurement (``kind``) and its parameters, and reads one JSON
result line prefixed with ``RESULT `` from stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.connect_worker import connect_closed, connect_paired
from benchmarks.inbound_worker import inbound_limit, inbound_refusal_cost
from benchmarks.loops import closed_async, closed_sync, open_loop
from benchmarks.otel_worker import otel_api_check, otel_closed, otel_hooks, otel_sdk_floor
from benchmarks.overhead_worker import mesh_layer_loop
from benchmarks.resilience_worker import consul_change, consul_idle, consul_outage, mesh_open_loop
from benchmarks.scale_worker import scale_memory, scale_pick
from benchmarks.tail_worker import tail_open_loop
from benchmarks.traffic_worker import traffic_loop

__all__ = ["KINDS", "RESULT_PREFIX", "main"]

RESULT_PREFIX = "RESULT "

KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "closed-async": closed_async,
    "closed-sync": closed_sync,
    "open-loop": open_loop,
    "scale-memory": scale_memory,
    "scale-pick": scale_pick,
    "mesh-open-loop": mesh_open_loop,
    "consul-change": consul_change,
    "consul-idle": consul_idle,
    "consul-outage": consul_outage,
    "otel-closed": otel_closed,
    "otel-api-check": otel_api_check,
    "otel-sdk-floor": otel_sdk_floor,
    "otel-hooks": otel_hooks,
    "mesh-layer-loop": mesh_layer_loop,
    "inbound-limit": inbound_limit,
    "inbound-refusal-cost": inbound_refusal_cost,
    "tail-open-loop": tail_open_loop,
    "traffic-loop": traffic_loop,
    "connect-closed": connect_closed,
    "connect-paired": connect_paired,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m benchmarks.worker '<json spec>'\n")
        return 2
    spec: dict[str, Any] = json.loads(args[0])
    kind = spec.get("kind")
    if kind not in KINDS:
        sys.stderr.write(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}\n")
        return 2
    result = KINDS[kind](spec)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
