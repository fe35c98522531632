"""The benchmark scenarios, in the order a full run executes them.

Each scenario is a function ``run(options) -> ScenarioResult`` that starts the servers it needs,
measures its variants in interleaved rounds (each in a fresh worker process) and judges the
targets from the issue. ``SCENARIOS`` maps the names ``--only`` accepts to those functions.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.model import Options, ScenarioResult
from benchmarks.scenarios import (
    balance,
    connect,
    consul,
    cpu,
    import_time,
    inbound,
    otel,
    overhead,
    resilience,
    scale,
    sidecar,
    success_path,
    sync,
    tail,
    traffic,
)

__all__ = ["SCENARIOS", "ScenarioFn"]

ScenarioFn = Callable[[Options], ScenarioResult]

SCENARIOS: dict[str, ScenarioFn] = {
    cpu.NAME: cpu.run,
    overhead.NAME: overhead.run,
    sidecar.NAME: sidecar.run,
    sync.NAME: sync.run,
    balance.SLOW: balance.run_slow,
    balance.FAILING: balance.run_failing,
    scale.NAME: scale.run,
    resilience.R503: resilience.run_503,
    resilience.STORM: resilience.run_storm,
    resilience.HANG: resilience.run_hang,
    success_path.NAME: success_path.run,
    consul.CHANGE: consul.run_change,
    consul.OUTAGE: consul.run_outage,
    otel.NAME: otel.run,
    import_time.NAME: import_time.run,
    inbound.NAME: inbound.run,
    tail.STALLS: tail.run_stalls,
    tail.OVERLOAD: tail.run_overload,
    traffic.NAME: traffic.run,
    connect.NAME: connect.run,
}
