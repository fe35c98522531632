"""The command line: ``python -m meshlib <command>`` (also installed as ``meshlib``).

Commands: ``demo`` (the main job), ``resolve <service>`` (what the current environment resolves
a service to) and ``config`` (the effective configuration and where each value came from). Bad
input exits non-zero with a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from meshlib.addressing import Addressing
from meshlib.client import discovery_from_config
from meshlib.config import MeshConfig
from meshlib.demo import DemoOptions, add_arguments, run_demo
from meshlib.errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshlib", description="meshlib: a service mesh as a Python library."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="start three local upstreams and show the mesh balancing")
    add_arguments(demo)
    resolve = sub.add_parser("resolve", help="show the endpoints a service resolves to")
    resolve.add_argument("service", help="a mesh service name, e.g. users")
    sub.add_parser("config", help="show the effective configuration and its sources")
    return parser


def _cmd_resolve(service: str) -> int:
    config = MeshConfig.from_env()
    discovery = discovery_from_config(config)
    target = Addressing(
        passthrough=config.passthrough_hosts,
        declares=discovery.declares,
        consul_domain=config.consul_domain,
    ).target(service)
    if target is None:
        print(f"{service!r} is not a mesh service name: it would pass through untouched.")
        return 1
    res = discovery.lookup(target)
    if res is None:
        print(f"{str(target)!r} is unknown to {discovery.describe()}", file=sys.stderr)
        return 1
    print(f"service {target} from {res.source}: {len(res.endpoints)} endpoint(s)")
    for e in res.endpoints:
        tags = f"  tags={','.join(e.tags)}" if e.tags else ""
        print(f"  {e.address:<28} weight={e.weight:g}{tags}")
    return 0


def _cmd_config() -> int:
    config = MeshConfig.from_env()
    env_names = {f.name: f"MESH_{f.name.upper()}" for f in config.__dataclass_fields__.values()}
    for name, value in config.items():
        var = env_names[name]
        source = "environment" if var in os.environ else "default"
        if name == "static_endpoints":
            value = {k: [e.address for e in v] for k, v in dict(value).items()}  # type: ignore[call-overload]
        print(f"{var:<28} {value!s:<40} ({source})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            opts = DemoOptions(
                duration=args.duration, rate=args.rate, seed=args.seed, consul=args.consul
            )
            return run_demo(opts)
        if args.command == "resolve":
            return _cmd_resolve(args.service)
        return _cmd_config()
    except ConfigError as exc:
        print(f"meshlib: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
