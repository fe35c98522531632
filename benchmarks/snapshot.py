"""A frozen copy of ``src/meshlib`` for the length of one benchmark run.

Why: a full run takes a quarter of an hour and starts a hundred worker processes, each of
which imports meshlib afresh. If the source changes meanwhile (someone saves a file), later
workers would measure different code from earlier ones - or fail to import half-edited code -
and a ratio between them would mean nothing. So the run copies the package once, at start,
into a temp dir that goes first on ``sys.path`` of the parent and on ``PYTHONPATH`` of every
child (workers and ``meshlib.upstream`` servers alike), and the report names the copy's digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ENV_VAR", "REPO_ROOT", "SOURCE", "git_head", "source_digest", "take_snapshot"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = REPO_ROOT / "src" / "meshlib"
ENV_VAR = "MESHLIB_BENCH_SRC"
"""Set to the snapshot's import root for the run; children put it first on their path."""


def take_snapshot() -> Path:
    """Copy ``src/meshlib`` to a new temp dir and make this process import from it.

    Returns the temp dir (the import root); the caller removes it when the run ends.
    """
    root = Path(tempfile.mkdtemp(prefix="meshlib-bench-src-"))
    shutil.copytree(SOURCE, root / "meshlib", ignore=shutil.ignore_patterns("__pycache__"))
    os.environ[ENV_VAR] = str(root)
    sys.path.insert(0, str(root))
    return root


def source_digest(root: Path) -> str:
    """A short SHA-256 over every file of the snapshot (names and contents)."""
    h = hashlib.sha256()
    for path in sorted((root / "meshlib").rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def git_head() -> str:
    """The checked-out commit (read-only ``git rev-parse``), or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.decode().strip() or "unknown"
