"""Static discovery: endpoints declared in code, an environment variable, or a watched file.

This is the embedded default that needs no registry. A file (JSON or TOML, like Linkerd 1's
file namer) is re-read when its modification time or size changes. The check is lazy: a lookup
stats the file at most once per ``poll_interval``, so there is no watcher thread and an idle
process does no work. A file that fails to parse keeps the last good set and logs one warning
per broken version; the next good version is applied and logged as recovered.

File format (a mapping from service name to endpoints; an endpoint is ``"host:port"`` or a table
with ``address`` and optional ``weight``, ``tags``, ``meta`` and ``node_meta``)::

    {"users": ["127.0.0.1:8001", {"address": "127.0.0.1:8002", "weight": 2}]}

    users = ["127.0.0.1:8001", { address = "127.0.0.1:8002", weight = 2 }]

Traffic management without Consul: the reserved key ``config_entries`` (never a service name,
since ``_`` is not allowed in one) holds Consul ``service-resolver``, ``service-splitter`` and
``service-router`` entries in Consul's own JSON, validated at load and compiled into the same
discovery chain Consul would serve (``meshlib.traffic.compiler``), so subsets (over ``tags``
and ``meta``), splits, routes, failover and redirects work the same.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.discovery.base import Discovery, Resolution, Target
from meshlib.endpoint import EMPTY_META, Endpoint, is_ip_literal, parse_endpoint, validate_host
from meshlib.errors import ConfigError

if TYPE_CHECKING:  # the traffic machinery loads only for a file that declares config entries
    from meshlib.traffic.chain import Chain

__all__ = [
    "ENTRIES_KEY",
    "EndpointSpec",
    "StaticDiscovery",
    "load_static_file",
    "parse_entries",
    "parse_services",
]

log = logging.getLogger("meshlib.discovery")

EndpointSpec = str | Endpoint | Mapping[str, Any]
ENTRIES_KEY = "config_entries"
Entries = dict[tuple[str, str], Mapping[str, Any]]


def parse_entries(data: object, where: str) -> Entries:
    """Validate a list of config entries (subset filters against what meshlib can evaluate)."""
    if data is None:
        return {}
    from meshlib.traffic.chain import parse_chain
    from meshlib.traffic.compiler import CompileError, compile_chain
    from meshlib.traffic.entries import EntryError, entry_key, validate_entry

    if isinstance(data, str | Mapping) or not isinstance(data, Sequence):
        raise ValueError(f"{where}: {ENTRIES_KEY} must be a list of config entries")
    out: Entries = {}
    for i, entry in enumerate(data):
        try:
            validate_entry(entry, check_filter=lambda text: _check(text))
        except EntryError as exc:
            raise ValueError(f"{where}: {ENTRIES_KEY}[{i}]: {exc}") from None
        out[entry_key(entry)] = entry
    for _, name in out:
        # Entries that reference each other wrongly (a split to a subset the resolver lacks)
        # fail here, at load, not on a request.
        try:
            parse_chain(compile_chain(name, datacenter="dc1", lookup=_lookup(out)))
        except (CompileError, ValueError) as exc:
            raise ValueError(f"{where}: {ENTRIES_KEY} for {name!r}: {exc}") from None
    return out


def _lookup(entries: Entries) -> Callable[[str, str], Mapping[str, Any] | None]:
    return lambda kind, name: entries.get((kind, name))


def _check(text: str) -> None:
    from meshlib.traffic.bexpr import compile_filter
    from meshlib.traffic.schema import SUBSET_SCHEMA

    compile_filter(text, SUBSET_SCHEMA)


def _endpoint(spec: object, where: str) -> Endpoint:
    if isinstance(spec, Endpoint):
        return spec
    if isinstance(spec, str):
        return parse_endpoint(spec)
    if isinstance(spec, Mapping):
        address = spec.get("address")
        if not isinstance(address, str):
            raise ValueError(f"{where}: an endpoint table needs an 'address' string")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"{where}: weight must be a number, got {weight!r}")
        tags = spec.get("tags", ())
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{where}: tags must be a list of strings")
        metas = []
        for key in ("meta", "node_meta"):
            meta = spec.get(key, {})
            if not isinstance(meta, Mapping) or not all(isinstance(v, str) for v in meta.values()):
                raise ValueError(f"{where}: {key} must be a table of strings")
            metas.append({str(k): v for k, v in meta.items()})
        parsed = parse_endpoint(address, weight=float(weight))
        return Endpoint(
            host=parsed.host,
            port=parsed.port,
            weight=parsed.weight,
            tags=tuple(tags),
            meta=metas[0],
            node_meta=metas[1] or EMPTY_META,
        )
    raise ValueError(f"{where}: an endpoint must be 'host:port' or a table, got {spec!r}")


def parse_services(data: object, where: str) -> dict[str, tuple[Endpoint, ...]]:
    """Validate a service → endpoints mapping; raise ``ValueError`` naming the bad entry."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of service name to endpoint list")
    services: dict[str, tuple[Endpoint, ...]] = {}
    for name, specs in data.items():
        if name == ENTRIES_KEY:
            continue
        if not isinstance(name, str):
            raise ValueError(f"{where}: service names must be strings, got {name!r}")
        try:
            validate_host(name)
        except ValueError:
            raise ValueError(f"{where}: service name {name!r} is not a valid host name") from None
        if is_ip_literal(name) or name.lower() == "localhost":
            raise ValueError(
                f"{where}: {name!r} cannot be a service name (IPs and localhost never are)"
            )
        if isinstance(specs, str | Mapping) or not isinstance(specs, Sequence):
            raise ValueError(f"{where}: service {name!r} needs a list of endpoints")
        endpoints = []
        for i, spec in enumerate(specs):
            try:
                endpoints.append(_endpoint(spec, f"{where}: {name}[{i}]"))
            except ValueError as exc:
                raise ValueError(f"{where}: service {name!r}: {exc}") from None
        services[name.lower()] = tuple(dict.fromkeys(endpoints))
    return services


def load_static_file(path: Path) -> tuple[dict[str, tuple[Endpoint, ...]], Entries]:
    """Parse a JSON or TOML endpoints file (by suffix; ``.toml`` is TOML, anything else JSON):
    its services and its config entries."""
    raw = path.read_bytes()
    try:
        if path.suffix == ".toml":
            import tomllib  # only for TOML files: ``import meshlib`` does not pay for it

            data: object = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse: {exc}") from None
    services = parse_services(data, str(path))
    assert isinstance(data, Mapping)
    return services, parse_entries(data.get(ENTRIES_KEY), str(path))


class StaticDiscovery(Discovery):
    """Endpoints from a mapping and/or a watched file. File entries override mapping entries."""

    def __init__(
        self,
        services: Mapping[str, Sequence[EndpointSpec]] | None = None,
        *,
        file: str | os.PathLike[str] | None = None,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
        source: str = "code",
        config_entries: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self._clock = clock
        self._base = parse_services(services or {}, source)
        self._base_entries = parse_entries(config_entries, source)
        self._entries: Entries = dict(self._base_entries)
        self._chains: dict[str, Chain | None] = {}
        self._source = source
        self._file = Path(file) if file is not None else None
        self._poll = poll_interval
        self._file_sig: tuple[int, int] | None = None
        self._bad_sig: tuple[int, int] | None = None
        self._next_check = 0.0
        self._resolutions: dict[Target, Resolution] = {}
        self._services: dict[str, tuple[Endpoint, ...]] = dict(self._base)
        if self._file is not None:
            sig = self._stat()
            try:
                self._apply_file(load_static_file(self._file), sig)
            except (OSError, ValueError) as exc:
                # At start there is no last good set to keep, so this is a configuration error.
                raise ConfigError(
                    f"MESH_STATIC_FILE {str(self._file)!r} cannot be used: {exc}. "
                    "It must be a readable JSON or TOML mapping of service name to endpoints."
                ) from None
            self._next_check = clock.now() + poll_interval

    def _stat(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            st = self._file.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _apply_file(
        self, loaded: tuple[dict[str, tuple[Endpoint, ...]], Entries], sig: object
    ) -> None:
        services, entries = loaded
        merged = dict(self._base)
        merged.update(services)
        self._services = merged
        self._entries = {**self._base_entries, **entries}
        self._chains = {}
        self._resolutions.clear()
        self._file_sig = sig if isinstance(sig, tuple) else None

    def _maybe_reload(self) -> None:
        now = self._clock.now()
        if now < self._next_check:
            return
        self._next_check = now + self._poll
        sig = self._stat()
        if sig is None or sig == self._file_sig or sig == self._bad_sig:
            return
        assert self._file is not None
        try:
            services = load_static_file(self._file)
        except (OSError, ValueError) as exc:
            self._bad_sig = sig
            log.warning(
                "static endpoints file is invalid; keeping the last good endpoints: %s",
                exc,
                extra={"file": str(self._file)},
            )
            return
        recovered = self._bad_sig is not None
        self._bad_sig = None
        self._apply_file(services, sig)
        log.info(
            "static endpoints file %s: %s",
            "recovered" if recovered else "reloaded",
            self._file,
            extra={"file": str(self._file)},
        )

    def lookup(self, target: Target) -> Resolution | None:
        if self._file is not None:
            self._maybe_reload()
        res = self._resolutions.get(target)
        if res is not None:
            return res
        endpoints = self._services.get(target.service)
        if endpoints is None:
            return None
        if target.tag is not None:
            endpoints = tuple(e for e in endpoints if target.tag in e.tags)
        res = Resolution(
            target=target, endpoints=endpoints, source=self.describe(), updated_at=self._clock.now()
        )
        self._resolutions[target] = res
        return res

    def declares(self, host: str) -> bool:
        if self._file is not None:
            self._maybe_reload()
        return host in self._services or ("service-resolver", host) in self._entries

    def chain(self, target: Target) -> Chain | None:
        """The chain compiled from the declared config entries (None without any)."""
        if not self._entries or target.tag or target.dc or target.subset:
            return None
        if self._file is not None:
            self._maybe_reload()
        try:
            return self._chains[target.service]
        except KeyError:
            pass
        from meshlib.traffic.chain import parse_chain
        from meshlib.traffic.compiler import CompileError, compile_chain

        try:
            compiled = compile_chain(target.service, datacenter="dc1", lookup=self._entry)
            chain = parse_chain(compiled)
        except (CompileError, ValueError) as exc:
            raise ConfigError(f"{self.describe()}: config entries for {target}: {exc}") from None
        self._chains[target.service] = chain
        for problem in chain.problems if chain is not None else ():
            # Once per compiled version (the file's reload recompiles), never per request.
            log.warning("service %s: discovery chain: %s", target.service, problem)
        return chain

    def _entry(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return self._entries.get((kind, name))

    def services(self) -> dict[str, tuple[Endpoint, ...]]:
        """All declared services and their endpoints (a copy)."""
        return dict(self._services)

    def describe(self) -> str:
        where = [self._source] if self._base or self._file is None else []
        if self._file is not None:
            where.append(f"file {self._file}")
        return "static discovery (" + ", ".join(where) + ")"
