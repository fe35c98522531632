"""Command line: run FakeConsul in the foreground until SIGINT or SIGTERM.

``python -m meshlib.testing.fake_consul --port 8500`` gives non-Python services (or a manual
``curl`` session) the same fake agent the pytest fixtures use. ``--port 0`` picks a free port;
the first line printed is the address, so a parent process can read it and connect.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .server import FakeConsul

__all__ = ["main"]


def _token(text: str) -> tuple[str, str]:
    token, sep, policy = text.partition("=")
    if not sep or policy not in ("read", "write") or not token:
        raise argparse.ArgumentTypeError(f"expected TOKEN=read|write, got {text!r}")
    return token, policy


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until a termination signal, then stop cleanly."""
    parser = argparse.ArgumentParser(
        prog="python -m meshlib.testing.fake_consul",
        description="A fake Consul agent (dev mode) on 127.0.0.1 for tests.",
    )
    parser.add_argument("--port", type=int, default=8500, help="port to bind; 0 = any free port")
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--node-name", default="fake-node")
    parser.add_argument("--node-address", default="127.0.0.1", help="address the node reports")
    parser.add_argument(
        "--acl-token",
        action="append",
        type=_token,
        default=[],
        metavar="TOKEN=read|write",
        help="enable ACLs and accept this token (repeatable)",
    )
    parser.add_argument("--default-acl-policy", choices=("allow", "deny"), default="allow")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    consul = FakeConsul(
        args.port,
        acl_tokens=dict(args.acl_token) if args.acl_token else None,
        default_acl_policy=args.default_acl_policy,
        datacenter=args.datacenter,
        node_name=args.node_name,
        node_address=args.node_address,
    )
    with consul:
        print(f"FakeConsul listening on {consul.url} (CONSUL_HTTP_ADDR={consul.http_addr})")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    print("FakeConsul stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
