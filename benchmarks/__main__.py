"""``python -m benchmarks``: run the benchmark suite and write ``benchmarks/results.md``.

Options: ``--quick`` for a smoke run (about two minutes), ``--only NAME[,NAME]`` for some
scenarios, ``--rounds N`` for the number of interleaved rounds (default 5, 3 with ``--quick``).
A full run writes ``benchmarks/results.md``; a quick or partial run writes
``benchmarks/.work/results.md`` (git-ignored) unless ``--output`` says otherwise, so a smoke run
never overwrites the committed figures. The report is printed to stdout as well; progress
goes to stderr. Exit status: 0 when every scenario ran (targets may still be missed; add
``--strict`` to exit 1 on a miss), 2 when a scenario failed to run.

The run first freezes a copy of ``src/meshlib`` (``benchmarks.snapshot``) and imports only that
copy, in this process and in every child, so the whole run measures one version of the code.
That is why the suite's own modules are imported inside ``main``, after the copy is made.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks.model import Options, ScenarioResult
from benchmarks.snapshot import git_head, source_digest, take_snapshot

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="meshlib's benchmark suite (loopback only)."
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer requests/rounds)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these scenarios (repeat or comma-separate): {', '.join(names)}",
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    p.add_argument("--output", type=Path, default=None, help="where to write the markdown report")
    p.add_argument("--verbose", action="store_true", help="log every worker's result")
    p.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p


def _selected(
    only: Sequence[str], names: Sequence[str], parser: argparse.ArgumentParser
) -> list[str]:
    chosen = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    return [n for n in names if n in chosen] if chosen else list(names)


def _run_one(name: str, opts: Options) -> ScenarioResult:
    from benchmarks.runner import log
    from benchmarks.scenarios import SCENARIOS

    log(f"[{name}] starting")
    started = time.monotonic()
    try:
        res = SCENARIOS[name](opts)
    except Exception:
        res = ScenarioResult(name, "did not finish", "", error=traceback.format_exc(limit=8))
        log(f"[{name}] FAILED:\n{res.error}")
    res.seconds = time.monotonic() - started
    log(f"[{name}] finished in {res.seconds:.0f} s")
    return res


def _main(args_list: list[str], snapshot: Path) -> int:
    try:
        from benchmarks.report import render
        from benchmarks.runner import log
        from benchmarks.scenarios import SCENARIOS
    except Exception:
        sys.stderr.write(
            "meshlib (or the suite) cannot be imported from the snapshot of src/meshlib just "
            f"taken, so nothing was measured:\n{traceback.format_exc(limit=4)}"
        )
        return 2
    names = list(SCENARIOS)
    parser = _parser(names)
    args = parser.parse_args(args_list)
    if args.list:
        for name, fn in SCENARIOS.items():
            doc = (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<16} {doc}")
        return 0
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    opts = Options(rounds=rounds, quick=args.quick, verbose=args.verbose)
    selected = _selected(args.only, names, parser)
    partial = args.quick or len(selected) < len(names)
    output = args.output or (_HERE / ".work" / "results.md" if partial else _HERE / "results.md")
    source = (
        f"snapshot of src/meshlib taken at start (digest {source_digest(snapshot)}; "
        f"git HEAD {git_head()}, plus any uncommitted changes)"
    )
    started = time.monotonic()
    results = [_run_one(name, opts) for name in selected]
    text = render(results, opts, args_list, source)
    text += f"\n_Total wall time: {time.monotonic() - started:.0f} s._\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    log(f"report written to {output}")
    if any(r.error is not None for r in results):
        return 2
    missed = any(not ok for r in results for ok in r.verdicts)
    return 1 if args.strict and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Freeze the source, run the selected scenarios, write and print the report."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    snapshot = take_snapshot()
    try:
        return _main(args_list, snapshot)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
