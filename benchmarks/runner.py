"""Parent-side driver: start one worker process per variant and round, interleaved.

Why interleaved rounds (A B C, A B C, ...): a machine's speed drifts during a run (thermal
limits, other jobs, frequency scaling). Running all of A, then all of B, would fold that drift
into the comparison; alternating spreads it over every variant, and the median per variant
then discards the odd disturbed round.

The runner can also watch other processes (an HAProxy sidecar) and report the CPU they spent
while a worker ran, read from ``/proc/<pid>/stat`` before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.servers import proc_cpu_seconds
from benchmarks.snapshot import ENV_VAR
from benchmarks.worker import RESULT_PREFIX

__all__ = [
    "REPO_ROOT",
    "Variant",
    "WorkerError",
    "interleave",
    "log",
    "run_worker",
    "worker_env",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
Result = dict[str, Any]


class WorkerError(RuntimeError):
    """A worker process failed or timed out; carries the tail of its stderr."""


@dataclass(frozen=True)
class Variant:
    """One thing to measure: a display name, the worker spec, and pids whose CPU to watch."""

    name: str
    spec: dict[str, Any]
    watch: Sequence[int] = field(default_factory=tuple)
    timeout: float = 300.0


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the report."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The run's frozen copy of meshlib (see ``snapshot``) wins over the live ``src/``.
    src = env.get(ENV_VAR) or str(REPO_ROOT / "src")
    paths = [str(REPO_ROOT), src, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    # Loopback traffic only: no proxy from the environment may capture it.
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    env["PYTHONHASHSEED"] = "0"
    return env


def worker_env() -> dict[str, str]:
    """The environment every measurement process of the run gets (the frozen meshlib first)."""
    return _env()


def run_worker(spec: dict[str, Any], timeout: float = 300.0) -> Result:
    """Run ``python -m benchmarks.worker`` for ``spec`` in a fresh process; its JSON result."""
    argv = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
    try:
        done = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child by its pid
        raise WorkerError(f"worker {spec.get('kind')} timed out after {timeout:.0f} s") from exc
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    results = [ln for ln in lines if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not results:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-15:]
        raise WorkerError(
            f"worker {spec.get('kind')} exited {done.returncode}:\n  " + "\n  ".join(tail)
        )
    result: Result = json.loads(results[-1][len(RESULT_PREFIX) :])
    return result


def _watched(pids: Sequence[int]) -> list[float]:
    return [proc_cpu_seconds(pid) for pid in pids]


def interleave(
    scenario: str, variants: Sequence[Variant], rounds: int, verbose: bool = False
) -> dict[str, list[Result]]:
    """Run every variant once per round, in the same order each round; results per variant."""
    out: dict[str, list[Result]] = {v.name: [] for v in variants}
    for r in range(rounds):
        t0 = time.monotonic()
        for v in variants:
            before = _watched(v.watch)
            result = run_worker(v.spec, v.timeout)
            after = _watched(v.watch)
            result["watched_cpu_s"] = [a - b for a, b in zip(after, before, strict=True)]
            out[v.name].append(result)
            if verbose:
                log(f"  [{scenario}] round {r + 1} {v.name}: {_brief(result)}")
        log(f"  [{scenario}] round {r + 1}/{rounds} done in {time.monotonic() - t0:.1f} s")
    return out


def _brief(result: Result) -> str:
    keys = ("cpu_us_per_request", "p50_ms", "p99_ms", "us_per_pick", "bytes_per_endpoint")
    parts = [f"{k}={result[k]:.2f}" for k in keys if isinstance(result.get(k), float)]
    if "shares" in result:
        parts.append("shares=" + ",".join(f"{k}:{v:.1%}" for k, v in result["shares"].items()))
    return " ".join(parts)
