"""The main job runs end to end on a fresh machine: ``python -m meshlib demo`` (both modes)."""

import subprocess
import sys


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "meshlib", "demo", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_shows_balancing_and_resilience() -> None:
    out = _run("--duration", "1", "--rate", "100")
    assert "P2C over Peak-EWMA" in out
    assert "Round robin" in out
    assert "ejected" in out
    assert "revived" in out
    assert "What the mesh did" in out


def test_consul_demo_follows_the_registry() -> None:
    out = _run("--consul", "--rate", "100")
    assert "beta deregisters" in out
    assert "STALE" in out
    assert "caller-visible errors: 0 of" in out
