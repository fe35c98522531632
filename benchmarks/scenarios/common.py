"""Helpers the scenarios share: the common closed-loop spec, pulling one number out of each
round, paired differences, and judging targets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.model import Options, Row, ScenarioResult

__all__ = [
    "at_most",
    "at_most_every_round",
    "check_clean",
    "closed_c1_spec",
    "column",
    "paired_difference",
    "ratio_target",
]

Result = dict[str, Any]


def column(results: Sequence[Result], key: str | Callable[[Result], float]) -> list[float]:
    """One value per round: ``result[key]`` or ``key(result)``."""
    if callable(key):
        return [float(key(r)) for r in results]
    return [float(r[key]) for r in results]


def closed_c1_spec(
    urls: list[str], opts: Options, *, client: str = "mesh", requests: int = 3000, **extra: Any
) -> Result:
    """One async client looping over ``urls`` at concurrency 1 (the CPU-per-request scenarios);
    ``extra`` adds worker keys (``mesh``, ``sdk``, another ``kind``)."""
    spec: Result = {
        "kind": "closed-async",
        "client": client,
        "urls": urls,
        "concurrency": 1,
        "requests": opts.scale(requests, 600),
        "warmup": opts.scale(300, 100),
        "max_seconds": opts.seconds(20.0, 5.0),
        "balancer": "p2c-peak-ewma",
    }
    spec.update(extra)
    return spec


def paired_difference(
    res: ScenarioResult,
    label: str,
    row: Row,
    base: Row,
    metric: str = "CPU µs/request, paired difference",
) -> Row:
    """Add the per-round ``row - base`` (same-round pairs cancel the machine's drift)."""
    diffs = [r - b for r, b in zip(row.rounds, base.rounds, strict=True)]
    return res.add(Row(label, metric, diffs))


def ratio_target(row: Row, limit: float) -> Row:
    """Judge ``row`` by its ratio to the baseline: pass if the ratio is at most ``limit``."""
    row.target = f"≤ {limit:g}x baseline"
    row.passed = row.ratio is not None and row.ratio == row.ratio and row.ratio <= limit
    return row


def at_most(row: Row, limit: float, unit: str) -> Row:
    """Judge ``row`` by its median: pass if it is at most ``limit``."""
    row.target = f"≤ {limit:g} {unit}".rstrip()
    row.passed = row.median == row.median and row.median <= limit
    return row


def at_most_every_round(row: Row, limit: float, unit: str) -> Row:
    """Judge ``row`` by its worst round: pass only if every round is at most ``limit``."""
    row.target = f"≤ {limit:g} {unit} in every round"
    row.passed = bool(row.rounds) and max(row.rounds) <= limit
    return row


def check_clean(name: str, results: Sequence[Result]) -> list[str]:
    """Notes for any round that saw errors, so a broken setup never hides behind a median."""
    notes = []
    for i, r in enumerate(results, 1):
        errors = {**r.get("errors", {}), **r.get("warmup_errors", {})}
        if errors:
            notes.append(f"{name}, round {i}: request errors {errors}")
    return notes
