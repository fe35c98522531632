"""``import``: the time ``import meshlib`` takes next to ``import httpx``, in fresh processes.

Why: a serverless function or a CLI pays the import on every cold start, before its first
request. meshlib is httpx plus the mesh, so the baseline is ``import httpx`` in the same
environment (httpx imports its CLI module, and with it rich and click when they are installed;
both sides pay that alike). Each measurement is a fresh ``python -c`` process that imports
only ``time`` first and then the package, and reads the process's CPU time and the wall clock
around the import statement alone (interpreter start-up is the same for both and left out).
Bytecode caches are written first, in an unmeasured import of each, as a package installed by
pip has them. The target is on CPU time: on a shared machine the wall clock also counts the
time spent waiting for a core. The two run alternately, round after round, and the medians are
compared.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.model import Options, Row, ScenarioResult
from benchmarks.runner import REPO_ROOT, WorkerError, log, worker_env
from benchmarks.scenarios.common import ratio_target

__all__ = ["NAME", "TARGET", "run"]

NAME = "import"
TARGET = 1.3
_LABELS = {"httpx": "import httpx", "meshlib": "import meshlib"}
_CODE = (
    "import time\n"
    "t, c = time.perf_counter(), time.process_time()\n"
    "import {module}\n"
    "d, e = time.perf_counter() - t, time.process_time() - c\n"
    "import json, sys\n"
    "sys.stdout.write('RESULT ' + json.dumps({{'wall': d * 1e3, 'cpu': e * 1e3}}) + '\\n')\n"
)


def _measure(module: str, write_bytecode: bool = False) -> dict[str, float]:
    """The import's wall and CPU milliseconds in one fresh interpreter importing ``module``."""
    argv = [sys.executable, "-c", _CODE.format(module=module)]
    env = worker_env()
    if write_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        done = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60.0,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child by its pid
        raise WorkerError(f"import {module} timed out") from exc
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise WorkerError(
            f"import {module} exited {done.returncode}: {done.stderr.decode()[-500:]}"
        )
    result: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
    return result


def run(opts: Options) -> ScenarioResult:
    res = ScenarioResult(
        NAME,
        "Import time (a fresh process for each import)",
        "CPU and wall time of the import statement alone in a fresh `python -c`, alternating.",
    )
    rounds = opts.rounds * 4  # a process each: cheap, and more rounds steady the medians
    got: dict[str, list[dict[str, float]]] = {m: [] for m in _LABELS}
    for module in _LABELS:
        # Unmeasured: writes the bytecode caches an installed package has (the run's copy of
        # meshlib is fresh, and PYTHONDONTWRITEBYTECODE would make every import compile it).
        _measure(module, write_bytecode=True)
    for r in range(rounds):
        for module in _LABELS:
            got[module].append(_measure(module))
        if opts.verbose:
            brief = ", ".join(f"{m} {got[m][-1]['cpu']:.1f} ms" for m in _LABELS)
            log(f"  [{NAME}] round {r + 1}/{rounds}: {brief}")
    for key, metric in (("cpu", "import CPU ms"), ("wall", "import wall ms")):
        rows = {m: res.add(Row(_LABELS[m], metric, [g[key] for g in got[m]])) for m in _LABELS}
        res.ratio_to(rows["httpx"], rows["meshlib"])
        if key == "cpu":
            # CPU time is what the import costs; wall time on a shared machine adds waiting.
            ratio_target(rows["meshlib"], TARGET)
    return res
