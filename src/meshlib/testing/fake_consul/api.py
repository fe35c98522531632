"""Arranging FakeConsul's state from Python: services, nodes, checks, maintenance and KV.

Tests set the scene without HTTP round trips, but through the same write rules as the HTTP API
(``Registry``), so an instance registered here renders, indexes and wakes blocking queries
exactly like one a client registered over the wire. Errors Consul would answer with a status
code surface as ``ValueError`` carrying Consul's message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from meshlib.traffic.durations import format_go_duration, parse_go_duration
from meshlib.traffic.entries import EntryError, validate_entry

from .config_entries import TOPIC_CONFIG
from .decode import Fields, decode_service_def
from .model import CRITICAL, CheckDef
from .registry import CatalogRegistration, Registry
from .state import TOPIC_KV, State, StateError

__all__ = ["StateAPI"]


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """Python-API callers get ``ValueError`` with Consul's message instead of an HTTP status."""
    try:
        yield
    except StateError as exc:
        raise ValueError(exc.message) from None


class StateAPI:
    """The state-arranging half of ``FakeConsul``'s public API."""

    _state: State
    _registry: Registry

    @property
    def datacenter(self) -> str:
        return self._registry.identity.datacenter

    @property
    def node_name(self) -> str:
        return self._registry.identity.node_name

    # ------------------------------------------------------------------ state API

    @property
    def index(self) -> int:
        """The current Raft-style index (the highest ``X-Consul-Index`` a read can return)."""
        return self._state.index

    def tick(self) -> None:
        """Run TTL expiry and the critical-service reaper now, on the injected clock's time."""
        self._state.run_due()

    def register_service(
        self,
        name: str,
        *,
        service_id: str | None = None,
        address: str = "",
        port: int = 0,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: tuple[int, int] | None = None,
        tagged_addresses: Mapping[str, tuple[str, int]] | None = None,
        enable_tag_override: bool = False,
        kind: str = "",
        proxy: Mapping[str, Any] | None = None,
        connect: Mapping[str, Any] | None = None,
        ttl: str | float | None = None,
        status: str | None = None,
        checks: Iterable[Mapping[str, Any]] = (),
        node: str | None = None,
        node_address: str = "127.0.0.1",
        node_meta: Mapping[str, str] | None = None,
        replace_existing_checks: bool = False,
    ) -> str:
        """Register an instance as ``PUT /v1/agent/service/register`` would; returns its ID.

        ``ttl`` adds an embedded TTL check (``service:<id>``) whose initial status is ``status``
        (``critical`` when omitted, as in Consul); ``checks`` takes Consul check definitions.
        An instance with no checks is passing. ``node`` other than the agent's registers through
        the catalog instead (creating the node at ``node_address`` with ``node_meta``; an
        existing node is left as it is unless ``node_meta`` is given); only agent-node checks
        run TTL timers, as only a real agent runs checks.
        """
        body: dict[str, Any] = {
            "Name": name,
            "ID": service_id or name,
            "Tags": list(tags),
            "Address": address,
            "Port": port,
            "Meta": dict(meta or {}),
            "EnableTagOverride": enable_tag_override,
            "Kind": kind,
        }
        if weights is not None:
            body["Weights"] = {"Passing": weights[0], "Warning": weights[1]}
        if tagged_addresses:
            body["TaggedAddresses"] = {
                k: {"Address": a, "Port": p} for k, (a, p) in tagged_addresses.items()
            }
        if proxy is not None:
            body["Proxy"] = dict(proxy)
        if connect is not None:
            body["Connect"] = dict(connect)
        check_list: list[dict[str, Any]] = []
        if ttl is not None:
            ttl_text = ttl if isinstance(ttl, str) else format_go_duration(ttl)
            check_list.append({"TTL": ttl_text, **({"Status": status} if status else {})})
        check_list.extend(dict(c) for c in checks)
        body["Checks"] = check_list
        defn = decode_service_def(Fields(body, "ServiceDefinition"))
        with _api_errors():
            if node is None or node == self.node_name:
                self._registry.register_service(
                    defn, replace_existing_checks=replace_existing_checks
                )
            else:
                many = len(defn.checks) > 1
                for i, cdef in enumerate(defn.checks, 1):
                    default_id = f"service:{defn.id}" + (f":{i}" if many else "")
                    cdef.check_id = cdef.check_id or default_id
                    cdef.name = cdef.name or f"Service '{defn.name}' check"
                    cdef.service_id = defn.id
                # An existing node keeps its address and meta unless node_meta is given.
                keep_node = node_meta is None and node in self._state.nodes
                reg = CatalogRegistration(
                    node=node,
                    address=node_address,
                    node_meta=dict(node_meta or {}),
                    service=defn,
                    checks=defn.checks,
                    skip_node_update=keep_node,
                )
                self._registry.catalog_register(reg)
        return defn.id

    def deregister(self, service_id: str, *, node: str | None = None) -> None:
        """Remove an instance and its checks (no-op when unknown)."""
        with _api_errors():
            if node is None or node == self.node_name:
                self._registry.deregister_service(service_id)
            else:
                self._registry.catalog_deregister(node, service_id=service_id)

    def register_node(
        self,
        name: str,
        address: str,
        *,
        meta: Mapping[str, str] | None = None,
        tagged_addresses: Mapping[str, str] | None = None,
        node_id: str = "",
    ) -> None:
        """Add or update a catalog node (for instances on several nodes)."""
        reg = CatalogRegistration(
            node=name,
            address=address,
            node_id=node_id,
            node_meta=dict(meta or {}),
            tagged_addresses=dict(tagged_addresses or {}),
        )
        with _api_errors():
            self._registry.catalog_register(reg)

    def deregister_node(self, name: str) -> None:
        """Remove a node with all its services and checks."""
        with _api_errors():
            self._registry.catalog_deregister(name)

    def register_check(
        self,
        check_id: str,
        *,
        name: str | None = None,
        service_id: str = "",
        ttl: str | float | None = None,
        status: str | None = None,
        notes: str = "",
        output: str = "",
        node: str | None = None,
    ) -> None:
        """Add a check: a TTL check on the agent when ``ttl`` is given, else a status holder.

        Without ``service_id`` the check is node-level and so counts for every instance on the
        node, exactly as ``serfHealth`` does.
        """
        cdef = CheckDef(
            check_id=check_id,
            name=name or check_id,
            service_id=service_id,
            status=status or "",
            notes=notes,
            output=output,
        )
        with _api_errors():
            if ttl is not None:
                if node not in (None, self.node_name):
                    raise ValueError("TTL checks run on the agent's own node only")
                cdef.ttl = ttl if isinstance(ttl, float | int) else parse_go_duration(ttl)
                self._registry.register_check(cdef)
            else:
                cdef.status = cdef.status or CRITICAL
                reg = CatalogRegistration(
                    node=node or self.node_name, skip_node_update=True, checks=[cdef]
                )
                self._registry.catalog_register(reg)

    def deregister_check(self, check_id: str, *, node: str | None = None) -> None:
        with _api_errors():
            self._registry.deregister_check(check_id, node)

    def set_check_status(
        self, check_id: str, status: str, output: str | None = None, *, node: str | None = None
    ) -> None:
        """Set any check's status (and Output); a TTL check also restarts its timer."""
        self._registry.set_check_status(check_id, status, output, node=node)

    def check_status(self, check_id: str, *, node: str | None = None) -> str | None:
        """A check's current status, or None when it does not exist."""
        with self._state.lock:
            check = self._state.check(node or self.node_name, check_id)
            return check.status if check is not None else None

    def set_service_maintenance(
        self, service_id: str, enable: bool = True, reason: str = ""
    ) -> None:
        with _api_errors():
            self._registry.service_maintenance(service_id, enable, reason)

    def set_node_maintenance(self, enable: bool = True, reason: str = "") -> None:
        self._registry.node_maintenance(enable, reason)

    def kv_put(self, key: str, value: bytes | str | None, *, flags: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        with self._state.write() as tx:
            self._state.kv.put(key, data, flags=flags, cas=None, alloc=lambda: tx.index)
            tx.tables.add(TOPIC_KV)

    def kv_get(self, key: str) -> bytes | None:
        """The stored value (``b""`` for an empty one), or None when the key is absent."""
        with self._state.lock:
            entry = self._state.kv.get(key)
            return (entry.value or b"") if entry is not None else None

    def kv_delete(self, key: str, *, recurse: bool = False) -> None:
        with self._state.write() as tx:
            self._state.kv.delete(key, recurse=recurse, cas=None, alloc=lambda: tx.index)
            if tx.changed:
                tx.tables.add(TOPIC_KV)

    # ------------------------------------------------------------ config entries

    def set_config_entry(self, entry: Mapping[str, Any]) -> None:
        """Store a service-resolver, -splitter or -router (as ``PUT /v1/config`` does)."""
        try:
            validate_entry(entry)
        except EntryError as exc:
            raise ValueError(str(exc)) from None
        st = self._state
        with st.write() as tx:
            st.config.put(dict(entry), cas=None, alloc=lambda: tx.index)
            if tx.changed:
                tx.topics.add(TOPIC_CONFIG)

    def delete_config_entry(self, kind: str, name: str) -> None:
        """Remove a config entry; a missing one is fine (Consul's delete is idempotent)."""
        st = self._state
        with st.write() as tx:
            st.config.delete(kind, name, cas=None, alloc=lambda: tx.index)
            if tx.changed:
                tx.topics.add(TOPIC_CONFIG)
