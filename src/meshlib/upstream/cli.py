"""``python -m meshlib.upstream``: serve one upstream until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from meshlib.upstream.behaviour import UpstreamBehaviour
from meshlib.upstream.server import Upstream

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshlib.upstream",
        description="Serve one HTTP/1.1 upstream with controllable misbehaviour until SIGTERM.",
    )
    p.add_argument("--name", default="upstream", help="value of the X-Upstream header")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    p.add_argument("--slow-fraction", type=float, default=0.0)
    p.add_argument("--slow-extra", type=float, default=0.0, help="extra seconds for slow requests")
    p.add_argument(
        "--capacity", type=float, default=0.0, help="requests/s served; beyond it they queue"
    )
    p.add_argument("--fail-fraction", type=float, default=0.0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--retry-after", default=None, help="Retry-After value sent with failures")
    p.add_argument("--hang", action="store_true", help="read requests, never answer")
    p.add_argument("--body", default="ok", help="response body (UTF-8)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--history", type=int, default=32, help="request headers kept for /control")
    p.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent died)"
    )
    return p


async def _serve(behaviour: UpstreamBehaviour, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    up = Upstream(behaviour, host=args.host, port=args.port, history=args.history)
    try:
        await up.start()
    except OSError as exc:
        print(f"meshlib.upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(f"LISTENING {up.host}:{up.port}\n")
        sys.stdout.flush()
        if args.exit_on_stdin_eof:
            fd = sys.stdin.fileno()

            def _on_stdin() -> None:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(fd)
                    stop.set()

            loop.add_reader(fd, _on_stdin)
        await stop.wait()
    finally:
        await up.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m meshlib.upstream``; exits 0 on SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    try:
        behaviour = UpstreamBehaviour(
            name=args.name,
            latency=args.latency,
            slow_fraction=args.slow_fraction,
            slow_extra=args.slow_extra,
            capacity=args.capacity,
            fail_fraction=args.fail_fraction,
            fail_status=args.fail_status,
            retry_after=args.retry_after,
            hang=args.hang,
            body=args.body.encode("utf-8"),
            seed=args.seed,
        )
    except (TypeError, ValueError) as exc:
        _parser().error(str(exc))
    return asyncio.run(_serve(behaviour, args))
