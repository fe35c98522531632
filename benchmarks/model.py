"""Result records shared by the scenarios and the report, plus the statistics they use.

Why medians of per-round values and ratios against a baseline from the same run: absolute
numbers move with the machine, its clock and whatever else runs on it; a ratio of two
variants measured side by side, round after round, does not. The median ignores the one round
that a background job disturbed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Options", "Row", "ScenarioResult", "median", "nearest_rank"]


@dataclass(frozen=True)
class Options:
    """What the command line asked for; scenarios size their work from it."""

    rounds: int = 5
    quick: bool = False
    verbose: bool = False

    def scale(self, full: int, quick: int) -> int:
        """A request count (or similar) for this run: ``quick`` under ``--quick``."""
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a variant that never ran)."""
    return statistics.median(values) if values else float("nan")


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by nearest rank."""
    if not sorted_values:
        return float("nan")
    n = len(sorted_values)
    rank = max(0, min(n - 1, round(q / 100.0 * n + 0.5) - 1))
    return sorted_values[rank]


@dataclass
class Row:
    """One line of a scenario's table: a variant's metric over the rounds and its verdict.

    ``ratio`` is this variant's median over the baseline's median for the same metric;
    ``passed`` is None when the row carries no target (context rows, the baseline itself).
    """

    variant: str
    metric: str
    rounds: list[float]
    fmt: str = "{:.1f}"
    baseline: bool = False
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None

    @property
    def median(self) -> float:
        return median(self.rounds)

    def value(self, x: float) -> str:
        return "n/a" if x != x else self.fmt.format(x)


@dataclass
class ScenarioResult:
    """Everything one scenario reports: its table, notes and any error that stopped it."""

    name: str
    title: str
    what: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def ratio_to(self, baseline: Row, *rows: Row) -> None:
        """Fill in each row's ratio against ``baseline`` (same metric, same run)."""
        base = baseline.median
        baseline.baseline = True
        baseline.ratio = 1.0
        for row in rows:
            row.ratio = row.median / base if base and base == base else float("nan")

    @property
    def verdicts(self) -> list[bool]:
        return [r.passed for r in self.rows if r.passed is not None]
