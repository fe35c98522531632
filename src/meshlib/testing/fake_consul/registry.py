"""Consul's write rules for the agent and catalog APIs, applied to the state store.

This is where the agent's behaviour lives: default IDs and check names, ``service:<id>[:<i>]``
check IDs, initial ``critical`` status, check status surviving a re-registration, maintenance
checks, ``replace-existing-checks``, TTL updates, and the catalog's lower-level register and
deregister. Both the HTTP handlers and FakeConsul's Python API go through here, so a service
registered from a test looks exactly like one a client registered over HTTP.
"""

from __future__ import annotations

from .identity import (
    CONSUL_SERVICE_ID,
    DEFAULT_NODE_MAINT_REASON,
    DEFAULT_SERVICE_MAINT_REASON,
    NODE_MAINT_CHECK_ID,
    RUNNABLE_TYPES,
    SERF_CHECK_ID,
    SERVICE_MAINT_PREFIX,
    AgentIdentity,
    CatalogRegistration,
)
from .model import (
    CRITICAL,
    PASSING,
    VALID_STATUSES,
    CheckDef,
    CheckRec,
    NodeRec,
    ServiceDef,
    ServiceRec,
)
from .records import (
    default_tagged_addresses,
    same_check,
    same_node,
    same_service,
    service_rec,
)
from .state import State, StateError, Tx

__all__ = [
    "DEFAULT_NODE_MAINT_REASON",
    "DEFAULT_SERVICE_MAINT_REASON",
    "NODE_MAINT_CHECK_ID",
    "RUNNABLE_TYPES",
    "SERVICE_MAINT_PREFIX",
    "AgentIdentity",
    "CatalogRegistration",
    "Registry",
]


class Registry:
    """The agent's and catalog's write operations over one ``State``."""

    def __init__(self, state: State, identity: AgentIdentity) -> None:
        self.state = state
        self.identity = identity

    @property
    def node(self) -> str:
        return self.identity.node_name

    def bootstrap(self) -> None:
        """Register what a dev agent starts with: its node, ``consul`` and ``serfHealth``."""
        ident = self.identity
        addr = ident.node_address
        st = self.state
        with st.write() as tx:
            st.put_node(
                tx,
                NodeRec(
                    name=ident.node_name,
                    node_id=ident.node_id,
                    address=addr,
                    datacenter=ident.datacenter,
                    tagged_addresses={"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
                    meta={
                        **ident.node_meta,
                        "consul-network-segment": "",
                        "consul-version": ident.version,
                    },
                    create_index=tx.index,
                    modify_index=tx.index,
                ),
            )
            meta = {
                "non_voter": "false",
                "raft_version": "3",
                "read_replica": "false",
                "serf_protocol_current": "2",
                "serf_protocol_max": "5",
                "serf_protocol_min": "1",
                "version": ident.version,
            }
            consul = ServiceRec(ident.node_name, CONSUL_SERVICE_ID, "consul", port=8300, meta=meta)
            consul.create_index = consul.modify_index = tx.index
            st.put_service(tx, consul)
            serf = CheckRec(
                node=ident.node_name,
                check_id=SERF_CHECK_ID,
                name="Serf Health Status",
                status=PASSING,
                output="Agent alive and reachable",
                create_index=tx.index,
                modify_index=tx.index,
            )
            st.put_check(tx, serf)

    # ----------------------------------------------------------------- agent view

    def agent_services(self) -> list[ServiceRec]:
        """The agent's local services: its node's instances minus the server's ``consul``."""
        return [s for s in self.state.node_services(self.node) if s.id != CONSUL_SERVICE_ID]

    def agent_checks(self) -> list[CheckRec]:
        """The agent's local checks: its node's checks minus the server's ``serfHealth``."""
        return [c for c in self.state.node_checks(self.node) if c.check_id != SERF_CHECK_ID]

    def _validate_service_checks(self, defn: ServiceDef) -> list[CheckRec]:
        checks: list[CheckRec] = []
        many = len(defn.checks) > 1
        for i, cdef in enumerate(defn.checks, 1):
            try:
                cdef.validate()
            except ValueError as exc:
                raise StateError(400, f"Invalid check: {exc}") from None
            if cdef.status and cdef.status not in VALID_STATUSES:
                raise StateError(400, "Status for checks must 'passing', 'warning', 'critical'")
            cid = cdef.check_id or f"service:{defn.id}" + (f":{i}" if many else "")
            checks.append(
                CheckRec(
                    node=self.node,
                    check_id=cid,
                    name=cdef.name or f"Service '{defn.name}' check",
                    status=cdef.status or CRITICAL,
                    notes=cdef.notes,
                    service_id=defn.id,
                    service_name=defn.name,
                    type=cdef.check_type(),
                    definition=cdef,
                    runnable=cdef.check_type() in RUNNABLE_TYPES,
                )
            )
        return checks

    def _upsert_check(self, tx: Tx, check: CheckRec, *, keep_status: bool) -> None:
        st = self.state
        prev = st.check(check.node, check.check_id)
        if prev is not None and keep_status:
            check.status, check.output = prev.status, prev.output
            check.critical_since = prev.critical_since
        if prev is not None and same_check(prev, check):
            st.arm_ttl(tx, prev)
            return
        check.create_index = prev.create_index if prev is not None else tx.index
        check.modify_index = tx.index
        st.put_check(tx, check)

    def register_service(self, defn: ServiceDef, *, replace_existing_checks: bool = False) -> None:
        """``PUT /v1/agent/service/register``; identical re-registrations change nothing."""
        checks = self._validate_service_checks(defn)
        st = self.state
        candidate = service_rec(self.node, defn, default_tagged_addresses(defn))
        with st.write() as tx:
            existing = st.service(self.node, defn.id)
            if existing is None or not same_service(existing, candidate):
                candidate.create_index = existing.create_index if existing else tx.index
                candidate.modify_index = tx.index
                st.put_service(tx, candidate)
            for check in checks:
                # The agent restores a re-registered check's status and output from its snapshot.
                self._upsert_check(tx, check, keep_status=True)
            if replace_existing_checks:
                keep = {c.check_id for c in checks}
                for old in st.instance_checks(candidate):
                    if old.check_id not in keep:
                        st.remove_check(tx, self.node, old.check_id)

    def deregister_service(self, service_id: str) -> None:
        """Remove an agent service and its checks; an unknown ID is a no-op."""
        if service_id == CONSUL_SERVICE_ID:
            return
        with self.state.write() as tx:
            self.state.remove_service(tx, self.node, service_id)

    def register_check(self, defn: CheckDef) -> None:
        """``PUT /v1/agent/check/register`` with the agent's validation order and messages."""
        if not defn.name:
            raise StateError(400, "Missing check name")
        if defn.status and defn.status not in VALID_STATUSES:
            raise StateError(400, "Bad check status")
        try:
            defn.validate()
        except ValueError as exc:
            raise StateError(400, f"Invalid check: {exc}") from None
        svc = None
        if defn.service_id:
            svc = self.state.service(self.node, defn.service_id)
            if svc is None:
                raise StateError(404, f'ServiceID "{defn.service_id}" does not exist')
        check = CheckRec(
            node=self.node,
            check_id=defn.check_id or defn.name,
            name=defn.name,
            status=defn.status or CRITICAL,
            notes=defn.notes,
            service_id=defn.service_id,
            service_name=svc.name if svc is not None else "",
            type=defn.check_type(),
            definition=defn,
            runnable=defn.check_type() in RUNNABLE_TYPES,
        )
        with self.state.write() as tx:
            self._upsert_check(tx, check, keep_status=False)

    def deregister_check(self, check_id: str, node: str | None = None) -> None:
        """Remove a check; an unknown ID (or the server-owned ``serfHealth``) is a no-op."""
        if check_id == SERF_CHECK_ID and node is None:
            return
        with self.state.write() as tx:
            self.state.remove_check(tx, node or self.node, check_id)

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """pass/warn/fail/update: set status and Output, and restart the TTL timer."""
        check = self.state.check(self.node, check_id)
        if check is None or not check.ttl:
            raise StateError(500, f'CheckID "{check_id}" does not have associated TTL')
        with self.state.write() as tx:
            self.state.set_status(tx, check, status, output)
            self.state.arm_ttl(tx, check)

    def set_check_status(
        self, check_id: str, status: str, output: str | None = None, *, node: str | None = None
    ) -> None:
        """Any check on any node (the Python API's lever); TTL checks also restart their timer."""
        if status not in VALID_STATUSES:
            raise ValueError(f"status must be one of {sorted(VALID_STATUSES)}, got {status!r}")
        check = self.state.check(node or self.node, check_id)
        if check is None:
            raise KeyError(f"no check {check_id!r} on node {node or self.node!r}")
        with self.state.write() as tx:
            self.state.set_status(tx, check, status, check.output if output is None else output)
            self.state.arm_ttl(tx, check)

    def service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        """Add or remove the critical ``_service_maintenance:<id>`` check."""
        svc = self.state.service(self.node, service_id)
        if svc is None or service_id == CONSUL_SERVICE_ID:
            raise StateError(404, f'No service registered with ID "{service_id}"')
        self._maintenance(
            SERVICE_MAINT_PREFIX + service_id,
            "Service Maintenance Mode",
            enable,
            reason or DEFAULT_SERVICE_MAINT_REASON,
            svc,
        )

    def node_maintenance(self, enable: bool, reason: str) -> None:
        """Add or remove ``_node_maintenance``, which fails ``?passing`` for every service."""
        self._maintenance(
            NODE_MAINT_CHECK_ID,
            "Node Maintenance Mode",
            enable,
            reason or DEFAULT_NODE_MAINT_REASON,
            None,
        )

    def _maintenance(
        self, check_id: str, name: str, enable: bool, notes: str, svc: ServiceRec | None
    ) -> None:
        st = self.state
        with st.write() as tx:
            existing = st.check(self.node, check_id)
            if not enable:
                if existing is not None:
                    st.remove_check(tx, self.node, check_id)
                return
            if existing is not None:
                return
            check = CheckRec(
                node=self.node,
                check_id=check_id,
                name=name,
                status=CRITICAL,
                notes=notes,
                service_id=svc.id if svc else "",
                service_name=svc.name if svc else "",
                type="maintenance",
                create_index=tx.index,
                modify_index=tx.index,
            )
            st.put_check(tx, check)

    # --------------------------------------------------------------------- catalog

    def _check_dc(self, datacenter: str) -> None:
        if datacenter and datacenter != self.identity.datacenter:
            raise StateError(500, "No path to datacenter")

    def catalog_register(self, reg: CatalogRegistration) -> None:
        """``PUT /v1/catalog/register``: upsert the node, then its service, then its checks."""
        if not reg.node:
            raise StateError(500, "Must provide node")
        self._check_dc(reg.datacenter)
        if not reg.address and not reg.skip_node_update:
            raise StateError(500, "Must provide address if SkipNodeUpdate is not set")
        st = self.state
        known_ids = set(st.services.get(reg.node, {}))
        if reg.service is not None:
            known_ids.add(reg.service.id)
        for cdef in reg.checks:
            if cdef.service_id and cdef.service_id not in known_ids:
                raise StateError(500, "Missing service registration")
            if cdef.status and cdef.status not in VALID_STATUSES:
                raise StateError(500, f"Invalid check status: {cdef.status!r}")
        with st.write() as tx:
            existing = st.nodes.get(reg.node)
            if existing is None or not reg.skip_node_update:
                node = NodeRec(
                    name=reg.node,
                    node_id=reg.node_id or (existing.node_id if existing else ""),
                    address=reg.address or (existing.address if existing else ""),
                    datacenter=self.identity.datacenter,
                    tagged_addresses=dict(reg.tagged_addresses or {}),
                    meta=dict(reg.node_meta or {}),
                )
                if existing is None or not same_node(existing, node):
                    node.create_index = existing.create_index if existing else tx.index
                    node.modify_index = tx.index
                    st.put_node(tx, node)
            if reg.service is not None:
                rec = service_rec(reg.node, reg.service, dict(reg.service.tagged_addresses))
                old = st.service(reg.node, rec.id)
                if old is None or not same_service(old, rec):
                    rec.create_index = old.create_index if old else tx.index
                    rec.modify_index = tx.index
                    st.put_service(tx, rec)
            for cdef in reg.checks:
                svc = st.service(reg.node, cdef.service_id) if cdef.service_id else None
                # Only the agent runs TTLs and reaps: catalog checks just hold a status.
                cdef.ttl = None
                cdef.deregister_after = None
                check = CheckRec(
                    node=reg.node,
                    check_id=cdef.check_id or cdef.name,
                    name=cdef.name,
                    status=cdef.status or CRITICAL,
                    notes=cdef.notes,
                    output=cdef.output,
                    service_id=cdef.service_id,
                    service_name=svc.name if svc is not None else "",
                    type=cdef.type_hint,
                    definition=cdef,
                )
                self._upsert_check(tx, check, keep_status=False)

    def catalog_deregister(
        self, node: str, *, service_id: str = "", check_id: str = "", datacenter: str = ""
    ) -> None:
        """``PUT /v1/catalog/deregister``: a service, a check, or the whole node."""
        if not node:
            raise StateError(500, "Must provide node")
        self._check_dc(datacenter)
        st = self.state
        with st.write() as tx:
            if node not in st.nodes:
                return
            if service_id:
                st.remove_service(tx, node, service_id)
            elif check_id:
                st.remove_check(tx, node, check_id)
            else:
                st.remove_node(tx, node)
