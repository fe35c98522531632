"""The command line: ``python -m meshlib <command>`` (also installed as ``meshlib``).

Commands: ``demo`` (the main job), ``resolve <service>`` (what the current environment resolves
a service to), ``config`` (the effective configuration and where each value came from, secrets
masked), ``check`` (is the environment valid and is Consul reachable) and ``status <admin-url>``
(a running process's mesh state, read from its admin endpoint). Bad input exits non-zero with a
one-line message, never a traceback. The command line reads no environment variable itself:
everything goes through ``MeshConfig.from_env()``. Documented in docs/cli.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from meshlib.config import MeshConfig
from meshlib.demo.run import DemoOptions, add_arguments, run_demo
from meshlib.discovery.static import StaticDiscovery
from meshlib.display import same_value, show_value
from meshlib.errors import ConfigError, DiscoveryError
from meshlib.routing.addressing import Addressing
from meshlib.traffic.render import render_chain
from meshlib.transport import discovery_from_config

__all__ = ["main"]

# Which variables feed each MeshConfig field (for the "config" listing).
_VARIABLES = {
    "discovery": "MESH_DISCOVERY",
    "retry": "MESH_MAX_ATTEMPTS, MESH_RETRY_*",
    "budget": "MESH_RETRY_BUDGET_*",
    "accrual": "MESH_ACCRUAL_*",
    "limits": "MESH_RATE_LIMIT, MESH_MAX_IN_FLIGHT",
    "inbound": "MESH_INBOUND_*",
    "consul": "CONSUL_*",
    "consul_options": "MESH_CONSUL_*, MESH_DISCOVERY_*",
    "registration": "MESH_SERVICE_*",
    "locality": "MESH_ZONE, MESH_ZONE_*",
}
# Fields kept out of MeshConfig's repr hold secrets (MESH_ADMIN_TOKEN): shown only as set or not.
_SECRET_FIELDS = frozenset(f.name for f in dataclasses.fields(MeshConfig) if not f.repr)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and the exit code 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshlib", description="meshlib: a service mesh as a Python library.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="start three local upstreams and show the mesh balancing")
    add_arguments(demo)
    resolve = sub.add_parser("resolve", help="show the endpoints a service resolves to")
    resolve.add_argument("service", help="a mesh service name, e.g. users")
    resolve.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the registry's answer (default: MESH_DISCOVERY_TIMEOUT, 5)",
    )
    sub.add_parser("config", help="show the effective configuration and its sources")
    check = sub.add_parser(
        "check", help="validate the environment and reach Consul when it is used"
    )
    check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for Consul (default 5)"
    )
    status = sub.add_parser("status", help="show a running process's mesh state (admin endpoint)")
    status.add_argument(
        "url", help="the admin endpoint, e.g. http://127.0.0.1:9990 or :9990 (MESH_ADMIN_ADDR)"
    )
    status.add_argument(
        "--token", help="bearer token for the admin endpoint (default: MESH_ADMIN_TOKEN)"
    )
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)"
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON state")
    bench = sub.add_parser(
        "bench", help="run the benchmark suite (from a source checkout) and write its table"
    )
    bench.add_argument("--quick", action="store_true", help="a short smoke run (~2-3 min)")
    bench.add_argument("--only", help="comma-separated scenario names (see --list)")
    bench.add_argument("--list", action="store_true", help="list the scenarios")
    bench.add_argument("--rounds", type=int, help="interleaved rounds per scenario (default 5)")
    return parser


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run ``python -m benchmarks`` in the checkout this package was installed from.

    The suite needs nginx, HAProxy and the repository's benchmarks/ package, which is not part
    of the installed library, so it only runs from a source checkout (``pip install -e``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        print(
            "meshlib: bench needs a source checkout of meshlib (benchmarks/ is not installed "
            "with the package); clone the repository and pip install -e '.[dev]'",
            file=sys.stderr,
        )
        return 2
    argv = [sys.executable, "-m", "benchmarks"]
    if args.quick:
        argv.append("--quick")
    if args.list:
        argv.append("--list")
    if args.only:
        argv += ["--only", args.only]
    if args.rounds:
        argv += ["--rounds", str(args.rounds)]
    return subprocess.run(argv, cwd=root, check=False).returncode


def _cmd_resolve(service: str, timeout: float | None = None) -> int:
    """Fetch the service's endpoints as a client would on first use (a bounded wait), print
    them, and close the discovery (so a Consul watch does not outlive the command)."""
    config = MeshConfig.from_env()
    if timeout is not None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout:g}")
        options = dataclasses.replace(config.consul_options, first_timeout=timeout)
        config = dataclasses.replace(config, consul_options=options)
    discovery = discovery_from_config(config)
    try:
        target = Addressing(
            passthrough=config.passthrough_hosts,
            declares=discovery.declares,
            consul_domain=config.consul_domain,
        ).target(service)
        if target is None:
            print(f"{service!r} is not a mesh service name: it would pass through untouched.")
            return 1
        try:
            res = discovery.resolve_sync(target)
            chain = discovery.resolve_chain_sync(target)
        except DiscoveryError as exc:
            print(f"meshlib: {exc}", file=sys.stderr)
            return 1
    finally:
        discovery.close()
    if res is None and chain is None:
        print(f"{str(target)!r} is unknown to {discovery.describe()}", file=sys.stderr)
        return 1
    if res is None or (chain is not None and not res.endpoints):
        assert chain is not None
        print("\n".join(render_chain(chain, ())))  # only a chain names it: a redirect, say
        return 0
    if not res.endpoints:
        print(
            f"{str(target)!r} has no instance to route to in {discovery.describe()}",
            file=sys.stderr,
        )
        return 1
    stale = " (stale: the registry is not answering)" if res.stale else ""
    print(f"service {target} from {res.source}: {len(res.endpoints)} endpoint(s){stale}")
    for e in res.endpoints:
        tags = f"  tags={','.join(e.tags)}" if e.tags else ""
        print(f"  {e.address:<28} weight={e.weight:g}{tags}")
    if chain is not None:
        print("\n".join(render_chain(chain, res.endpoints)))
    return 0


def _cmd_config() -> int:
    config = MeshConfig.from_env()
    default = MeshConfig()
    uses_consul = config.discovery == "consul" or config.registration is not None
    print("meshlib configuration (secrets masked; source: default, or set by the environment)")
    for name, value in config.items():
        var = _VARIABLES.get(name) or (
            name.upper() if name.startswith("otel_") else f"MESH_{name.upper()}"
        )
        source = "default" if same_value(value, getattr(default, name)) else "environment"
        if name in _SECRET_FIELDS:
            shown = "<set>" if value else "-"
        elif name == "consul":
            shown = config.consul.address if uses_consul else "(not used: discovery is static)"
        else:
            shown = show_value(value)
        print(f"  {var:<36} {shown:<40} ({source})")
    if uses_consul:
        print("Consul (CONSUL_*):")
        for key, value in config.consul.describe().items():
            print(f"  {key:<36} {show_value(value)}")
    return 0


def _check_consul(config: MeshConfig, timeout: float) -> tuple[bool, str]:
    from meshlib.consul.http import sync_consul  # only when Consul is in use

    where = config.consul.address
    try:
        consul = sync_consul(config.consul, timeout=timeout)
    except Exception as exc:
        return False, f"consul: cannot set up a client for {where}: {type(exc).__name__}: {exc}"
    try:
        leader = consul.status.leader()
    except Exception as exc:
        return False, f"consul: {where} did not answer /v1/status/leader: {_reason(exc)}"
    finally:
        consul.http.close()
    if not leader:
        return False, f"consul: {where} answers but has no leader elected"
    return True, f"consul: {where} answers, leader {leader}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"


def _cmd_check(timeout: float) -> int:
    lines: list[tuple[bool, str]] = []
    try:
        config = MeshConfig.from_env()
    except ConfigError as exc:
        print(f"FAIL  configuration: {exc}")
        return 1
    lines.append((True, f"configuration: valid (discovery {config.discovery})"))
    if config.discovery == "static":
        try:
            discovery = discovery_from_config(config)
        except ConfigError as exc:
            lines.append((False, f"static discovery: {exc}"))
        else:
            assert isinstance(discovery, StaticDiscovery)
            names = sorted(discovery.services())
            listed = (
                f"{len(names)} service(s): {', '.join(names)}"
                if names
                else "no service declared (MESH_STATIC_ENDPOINTS or MESH_STATIC_FILE)"
            )
            lines.append((True, f"{discovery.describe()}: {listed}"))
    if config.admin_addr:
        from meshlib.admin.server import parse_admin_addr

        try:
            parse_admin_addr(config.admin_addr, config.admin_token)
        except ConfigError as exc:
            lines.append((False, f"admin: {exc}"))
        else:
            token = "token required" if config.admin_token else "no token (loopback only)"
            lines.append((True, f"admin: MESH_ADMIN_ADDR={config.admin_addr}, {token}"))
    warnings: list[str] = []
    if config.discovery == "consul" or config.registration is not None:
        if config.consul.port_implied:
            warnings.append(
                f"consul: CONSUL_HTTP_ADDR has no port, so {config.consul.address} is used (the "
                "scheme's default, as in Consul's Go client); Consul's HTTP API listens on 8500 "
                "by default: write host:8500 if that is what you mean"
            )
        lines.append(_check_consul(config, timeout))
    for ok, text in lines:
        print(f"{'OK  ' if ok else 'FAIL'}  {text}")
    for text in warnings:
        print(f"WARN  {text}")
    return 0 if all(ok for ok, _ in lines) else 1


def _admin_url(url: str) -> str:
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + ("127.0.0.1" + text if text.startswith(":") else text)
    return text


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or isinstance(value, bool):
        return "-"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}{suffix}"
    return str(value)


def _print_status(state: Mapping[str, Any]) -> None:
    services: Mapping[str, Any] = state.get("services") or {}
    if not services:
        print("no services yet: a service is listed after the mesh has sent it a request")
        return
    cols = ("SERVICE", "ENDPOINT", "STATE", "IN-FLIGHT", "EWMA MS", "P50 MS", "P99 MS")
    head = f"{cols[0]:<16} {cols[1]:<24} {cols[2]:<8}" + "".join(f" {c:>9}" for c in cols[3:])
    print(head + f" {'SUCCESS':>8} {'NEXT PROBE':>10}")
    for name, svc in services.items():
        for e in svc.get("endpoints") or ():
            st = e.get("state", "alive")
            probe = _fmt(e.get("next_probe_in_s"), 1, "s") if st == "dead" else "-"
            rate = e.get("success_rate")
            success = "-" if rate is None else f"{rate * 100:.1f}%"
            print(
                f"{name:<16} {e.get('address', '?'):<24} {st:<8} {e.get('in_flight', 0):>9}"
                f" {_fmt(e.get('ewma_ms')):>9} {_fmt(e.get('p50_ms')):>9}"
                f" {_fmt(e.get('p99_ms')):>9} {success:>8} {probe:>10}"
            )
    print()
    for name, svc in services.items():
        b = svc.get("budget") or {}
        budget = (
            f"budget balance {_fmt(b.get('balance'), 1)} (retries {b.get('retries_in_window')}"
            f" / calls {b.get('calls_in_window')} in window, exhausted {b.get('exhausted')})"
            if b
            else "budget -"
        )
        fresh = f"STALE for {_fmt(svc.get('staleness_s'), 1)}s" if svc.get("stale") else "fresh"
        panic = "  PANIC (over half the endpoints ejected)" if svc.get("panic") else ""
        print(f"{name}: {budget}; discovery {fresh} ({svc.get('source')}){panic}")


def _cmd_status(url: str, token: str | None, timeout: float, as_json: bool) -> int:
    base = _admin_url(url)
    if token is None:
        token = MeshConfig.from_env().admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as http:
            r = http.get(f"{base}/mesh/state", headers=headers)
    except httpx.InvalidURL:
        print(f"meshlib: {url!r} is not a URL (e.g. http://127.0.0.1:9990)", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(
            f"meshlib: cannot reach the admin endpoint at {base}: {_reason(exc)}", file=sys.stderr
        )
        return 1
    if r.status_code == 401:
        hint = "the token was refused" if token else "it requires a token"
        print(
            f"meshlib: {base} answered 401: {hint} (--token or MESH_ADMIN_TOKEN)", file=sys.stderr
        )
        return 1
    try:
        r.raise_for_status()
        state = r.json()
    except (httpx.HTTPStatusError, ValueError):
        print(
            f"meshlib: {base}/mesh/state answered {r.status_code} without a mesh state; "
            "is this a meshlib admin endpoint?",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(state, indent=2))
    else:
        _print_status(state)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (``--help`` 0, bad usage 2, failures 1 or 2)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "demo":
            opts = DemoOptions(
                duration=args.duration, rate=args.rate, seed=args.seed, consul=args.consul
            )
            return run_demo(opts)
        if args.command == "resolve":
            return _cmd_resolve(args.service, args.timeout)
        if args.command == "check":
            return _cmd_check(args.timeout)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "status":
            return _cmd_status(args.url, args.token, args.timeout, args.json)
        return _cmd_config()
    except ConfigError as exc:
        print(f"meshlib: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
