"""Rendering the results as markdown: a summary of targets, then one table per scenario.

Why markdown with the machine described: the file is committed next to the code, read in review
and compared across machines; without the CPU count, Python version and date a number means
little, and without the per-round values a reader cannot tell a stable result from a lucky one.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.servers import HAPROXY, NGINX

__all__ = ["machine_info", "render"]


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(source: str = "") -> list[tuple[str, str]]:
    """What the numbers were measured on (and which meshlib source they measured)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        ("date (UTC)", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")),
        ("CPUs", f"{os.cpu_count()} (usable by this process: {affinity})"),
        ("CPU model", _cpu_model()),
        ("load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("OS", platform.platform()),
        (
            "packages",
            ", ".join(
                f"{p} {_pkg(p)}"
                for p in ("meshlib", "httpx", "httpcore", "aiohttp", "httpx-aiohttp")
            ),
        ),
        ("nginx", _version([NGINX, "-v"])),
        ("haproxy", _version([HAPROXY, "-v"])),
        ("meshlib source", source or "live src/meshlib"),
    ]


def _ratio(row: Row) -> str:
    if row.baseline:
        return "1.00x (baseline)"
    if row.ratio is None:
        return ""
    return "n/a" if row.ratio != row.ratio else f"{row.ratio:.2f}x"


def _verdict(row: Row) -> str:
    if row.passed is None:
        return ""
    return "**PASS**" if row.passed else "**FAIL**"


def _table(res: ScenarioResult) -> list[str]:
    lines = [
        "| variant | metric | median | vs baseline | target | result | per round |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in res.rows:
        rounds = ", ".join(row.value(x) for x in row.rounds)
        lines.append(
            f"| {row.variant} | {row.metric} | {row.value(row.median)} | {_ratio(row)} "
            f"| {row.target} | {_verdict(row)} | {rounds} |"
        )
    return lines


def _summary(results: Sequence[ScenarioResult]) -> list[str]:
    lines = [
        "| scenario | variant | metric | median | vs baseline | target | result |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for res in results:
        if res.error is not None:
            lines.append(f"| {res.name} | | | | | | **ERROR** |")
        for row in res.rows:
            if row.passed is not None:
                lines.append(
                    f"| {res.name} | {row.variant} | {row.metric} | {row.value(row.median)} "
                    f"| {_ratio(row)} | {row.target} | {_verdict(row)} |"
                )
    return lines


def render(
    results: Sequence[ScenarioResult], opts: Options, argv: Sequence[str], source: str = ""
) -> str:
    """The whole report as markdown."""
    cmd = " ".join(["python -m benchmarks", *argv])
    out = [
        "# meshlib benchmark results",
        "",
        f"Command: `{cmd}` — {opts.rounds} interleaved rounds per scenario"
        + (", **quick mode (smoke run, not for comparison)**" if opts.quick else "")
        + ". Medians over rounds; ratios against a baseline measured in the same run. "
        "Method: `benchmarks/README.md`.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine_info(source)),
        "",
        "## Targets",
        "",
        *_summary(results),
    ]
    for res in results:
        out += ["", f"## `{res.name}`: {res.title}", "", res.what, ""]
        if res.error is not None:
            out += ["**ERROR** — the scenario did not finish:", "", "```", res.error, "```", ""]
        if res.rows:
            out += _table(res)
        if res.notes:
            out += ["", *(f"- {n}" for n in res.notes)]
        out += ["", f"_Scenario wall time: {res.seconds:.0f} s._"]
    return "\n".join(out) + "\n"
