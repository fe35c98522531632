"""Catalog storage with Consul's Raft-style indexes, change topics and TTL expiry on a given clock.

Every write runs in a ``Tx``: the first real change allocates the next index (one Raft apply),
and on commit the transaction bumps the per-service index of each service it touched (like
Consul's ``service.<name>`` index entries) and the per-table indexes (``nodes``, ``services``,
``checks``). It then hands the set of touched *topics* to ``notify`` so that only blocking queries
watching those topics wake: a change to service A never wakes a watcher of service B, which is
what lets one FakeConsul serve a thousand idle watches. A write that changes nothing allocates
no index and wakes nobody, as an idempotent re-registration does on a real agent.

TTL deadlines and the critical-service reaper run on an injectable monotonic clock, so tests
drive expiry with ``run_due(now)`` instead of sleeping.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config_entries import ConfigStore
from .kvstore import KVStore
from .model import CRITICAL, CheckRec, NodeRec, ServiceRec
from .sessions import SessionStore
from .tx import (
    TOPIC_ALL,
    TOPIC_CHECKS,
    TOPIC_KV,
    TOPIC_NODES,
    TOPIC_RUNNABLE,
    TOPIC_SERVICES,
    TOPIC_TTL,
    StateError,
    Tx,
    service_topic,
)

__all__ = [
    "TOPIC_ALL",
    "TOPIC_CHECKS",
    "TOPIC_KV",
    "TOPIC_NODES",
    "TOPIC_RUNNABLE",
    "TOPIC_SERVICES",
    "TOPIC_TTL",
    "State",
    "StateError",
    "Tx",
    "service_topic",
]

# Consul's reaper never deregisters sooner than this, whatever the check asked for.
_MIN_DEREGISTER_AFTER = 60.0


class State:
    """Nodes, service instances, checks and KV for one datacenter, guarded by ``lock``."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        notify: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.notify = notify
        self._index = 0
        self.nodes: dict[str, NodeRec] = {}
        self.services: dict[str, dict[str, ServiceRec]] = {}
        self.checks: dict[str, dict[str, CheckRec]] = {}
        self._by_name: dict[str, dict[tuple[str, str], ServiceRec]] = {}
        self._svc_checks: dict[tuple[str, str], dict[str, CheckRec]] = {}
        self._node_checks: dict[str, dict[str, CheckRec]] = {}
        self._service_index: dict[str, int] = {}
        self._extinction_index = 0
        self._table_index = {TOPIC_NODES: 0, TOPIC_SERVICES: 0, TOPIC_CHECKS: 0}
        self._ttl_heap: list[tuple[float, int, str, str]] = []
        self._reapable: set[tuple[str, str]] = set()
        self.kv = KVStore()
        self.sessions = SessionStore(self.kv)
        self.config = ConfigStore()
        self.abandon_generation = 0

    # ----------------------------------------------------------------- transactions

    @property
    def index(self) -> int:
        """The last index handed out (Consul's Raft commit index)."""
        return self._index

    def _allocate(self) -> int:
        self._index += 1
        return self._index

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """Run a write; on success commit its indexes and notify the topics it touched."""
        with self.lock:
            tx = Tx(self._allocate)
            yield tx
            topics = self._commit(tx)
        if topics and self.notify is not None:
            self.notify(frozenset(topics))

    def _commit(self, tx: Tx) -> set[str]:
        topics = set(tx.topics)
        if not (tx.services or tx.tables):
            return topics
        index = tx.index
        for name in tx.services:
            if self._by_name.get(name):
                self._service_index[name] = index
            else:
                self._service_index.pop(name, None)
                self._extinction_index = index
            topics.add(service_topic(name))
        for table in tx.tables:
            if table == TOPIC_KV:
                topics.add(TOPIC_KV)
                continue
            self._table_index[table] = index
            topics.add(table)
        return topics

    # ----------------------------------------------------------------------- queries

    def service_index(self, name: str) -> int:
        """Index for one service's health/catalog reads; the extinction index once it is gone."""
        return self._service_index.get(name, self._extinction_index)

    def table_index(self, *tables: str) -> int:
        return max(self._table_index[t] for t in tables)

    def instances(self, name: str) -> list[ServiceRec]:
        """Instances of a service, ordered by node then service ID as Consul returns them."""
        found = self._by_name.get(name)
        if not found:
            return []
        return [found[k] for k in sorted(found)]

    def all_instances(self) -> list[ServiceRec]:
        out: list[ServiceRec] = []
        for node in sorted(self.services):
            bucket = self.services[node]
            out.extend(bucket[sid] for sid in sorted(bucket))
        return out

    def node_services(self, node: str) -> list[ServiceRec]:
        bucket = self.services.get(node, {})
        return [bucket[sid] for sid in sorted(bucket)]

    def service(self, node: str, service_id: str) -> ServiceRec | None:
        return self.services.get(node, {}).get(service_id)

    def check(self, node: str, check_id: str) -> CheckRec | None:
        return self.checks.get(node, {}).get(check_id)

    def node_level_checks(self, node: str) -> list[CheckRec]:
        bucket = self._node_checks.get(node, {})
        return [bucket[c] for c in sorted(bucket)]

    def instance_checks(self, svc: ServiceRec) -> list[CheckRec]:
        bucket = self._svc_checks.get((svc.node, svc.id), {})
        return [bucket[c] for c in sorted(bucket)]

    def node_checks(self, node: str) -> list[CheckRec]:
        bucket = self.checks.get(node, {})
        return [bucket[c] for c in sorted(bucket)]

    def all_checks(self) -> list[CheckRec]:
        return [c for node in sorted(self.checks) for c in self.node_checks(node)]

    def tags_for(self, check: CheckRec) -> list[str]:
        """A check's ``ServiceTags``: the current tags of the instance it belongs to."""
        if not check.service_id:
            return []
        svc = self.service(check.node, check.service_id)
        return list(svc.tags) if svc is not None else []

    # ------------------------------------------------------------------- primitives

    def put_node(self, tx: Tx, node: NodeRec) -> None:
        self.nodes[node.name] = node
        self.services.setdefault(node.name, {})
        self.checks.setdefault(node.name, {})
        tx.tables.add(TOPIC_NODES)
        tx.services.update(s.name for s in self.services[node.name].values())

    def remove_node(self, tx: Tx, name: str) -> None:
        if name not in self.nodes:
            return
        for sid in list(self.services.get(name, {})):
            self.remove_service(tx, name, sid)
        for cid in list(self.checks.get(name, {})):
            self.remove_check(tx, name, cid)
        del self.nodes[name]
        self.services.pop(name, None)
        self.checks.pop(name, None)
        self._node_checks.pop(name, None)
        tx.tables.add(TOPIC_NODES)

    def put_service(self, tx: Tx, svc: ServiceRec) -> None:
        """Store an instance (replacing one with the same node and ID)."""
        old = self.services[svc.node].get(svc.id)
        if old is not None and old.name != svc.name:
            self._by_name.get(old.name, {}).pop((old.node, old.id), None)
            if not self._by_name.get(old.name):
                self._by_name.pop(old.name, None)
            tx.services.add(old.name)
        self.services[svc.node][svc.id] = svc
        self._by_name.setdefault(svc.name, {})[(svc.node, svc.id)] = svc
        for check in self._svc_checks.get((svc.node, svc.id), {}).values():
            check.service_name = svc.name
        tx.services.add(svc.name)
        tx.tables.add(TOPIC_SERVICES)

    def remove_service(self, tx: Tx, node: str, service_id: str) -> bool:
        """Remove an instance and every check attached to it; False when it did not exist."""
        svc = self.services.get(node, {}).pop(service_id, None)
        if svc is None:
            return False
        for cid in list(self._svc_checks.get((node, service_id), {})):
            self.remove_check(tx, node, cid)
        bucket = self._by_name.get(svc.name, {})
        bucket.pop((node, service_id), None)
        if not bucket:
            self._by_name.pop(svc.name, None)
        tx.touch()
        tx.services.add(svc.name)
        tx.tables.add(TOPIC_SERVICES)
        return True

    def _touch_check(self, tx: Tx, check: CheckRec) -> None:
        tx.tables.add(TOPIC_CHECKS)
        if check.service_id:
            svc = self.service(check.node, check.service_id)
            tx.services.add(svc.name if svc is not None else check.service_name)
        else:
            tx.services.update(s.name for s in self.services.get(check.node, {}).values())

    def put_check(self, tx: Tx, check: CheckRec) -> None:
        """Store a check, schedule its TTL and reaper bookkeeping, and touch its services."""
        old = self.checks[check.node].get(check.check_id)
        if old is not None:
            self._unindex_check(old)
        self.checks[check.node][check.check_id] = check
        if check.service_id:
            self._svc_checks.setdefault((check.node, check.service_id), {})[check.check_id] = check
        else:
            self._node_checks.setdefault(check.node, {})[check.check_id] = check
        now = self.clock()
        if check.status == CRITICAL and check.critical_since is None:
            check.critical_since = now
        defn = check.definition
        if defn is not None and defn.deregister_after is not None and check.service_id:
            self._reapable.add((check.node, check.check_id))
        if check.ttl:
            self.arm_ttl(tx, check)
        if check.runnable or (old is not None and old.runnable):
            tx.topics.add(TOPIC_RUNNABLE)
        self._touch_check(tx, check)

    def _unindex_check(self, check: CheckRec) -> None:
        check.ttl_generation += 1
        self._reapable.discard((check.node, check.check_id))
        if check.service_id:
            bucket = self._svc_checks.get((check.node, check.service_id), {})
            bucket.pop(check.check_id, None)
            if not bucket:
                self._svc_checks.pop((check.node, check.service_id), None)
        else:
            self._node_checks.get(check.node, {}).pop(check.check_id, None)

    def remove_check(self, tx: Tx, node: str, check_id: str) -> bool:
        check = self.checks.get(node, {}).pop(check_id, None)
        if check is None:
            return False
        self._unindex_check(check)
        tx.touch()
        if check.runnable:
            tx.topics.add(TOPIC_RUNNABLE)
        self._touch_check(tx, check)
        return True

    def set_status(self, tx: Tx, check: CheckRec, status: str, output: str) -> bool:
        """Change a check's status/output; unchanged values are a no-op, as in the agent."""
        if check.status == status and check.output == output:
            return False
        if status == CRITICAL and check.status != CRITICAL:
            check.critical_since = self.clock()
        elif status != CRITICAL:
            check.critical_since = None
        check.status = status
        check.output = output
        check.modify_index = tx.index
        self._touch_check(tx, check)
        return True

    def arm_ttl(self, tx: Tx, check: CheckRec) -> None:
        """(Re)start a TTL check's timer, as every pass/warn/fail/update does."""
        ttl = check.ttl
        if not ttl:
            return
        check.ttl_generation += 1
        check.ttl_deadline = self.clock() + ttl
        heapq.heappush(
            self._ttl_heap, (check.ttl_deadline, check.ttl_generation, check.node, check.check_id)
        )
        tx.topics.add(TOPIC_TTL)

    # ------------------------------------------------------------------ expiry

    def _live_heap_top(self) -> tuple[float, int, str, str] | None:
        while self._ttl_heap:
            top = self._ttl_heap[0]
            check = self.check(top[2], top[3])
            if check is not None and check.ttl_generation == top[1]:
                return top
            heapq.heappop(self._ttl_heap)
        return None

    def _reap_due(self, check: CheckRec) -> float | None:
        defn = check.definition
        if check.status != CRITICAL or check.critical_since is None or defn is None:
            return None
        after = max(defn.deregister_after or 0.0, _MIN_DEREGISTER_AFTER)
        return check.critical_since + after

    def next_due(self) -> float | None:
        """The clock time of the next TTL expiry or reap, for the background timer."""
        with self.lock:
            top = self._live_heap_top()
            due = [top[0]] if top is not None else []
            for node, cid in self._reapable:
                check = self.check(node, cid)
                when = self._reap_due(check) if check is not None else None
                if when is not None:
                    due.append(when)
            return min(due) if due else None

    def run_due(self) -> None:
        """Expire TTL checks whose deadline passed and reap long-critical services."""
        now = self.clock()
        with self.write() as tx:
            while (top := self._live_heap_top()) is not None and top[0] <= now:
                heapq.heappop(self._ttl_heap)
                expiring = self.checks[top[2]][top[3]]
                expiring.ttl_deadline = None
                expiring.ttl_generation += 1
                last = expiring.output
                expired = "TTL expired"
                if last and not last.startswith(expired):
                    expired = f"TTL expired (last output before timeout follows): {last}"
                self.set_status(tx, expiring, CRITICAL, expired)
            for node, cid in list(self._reapable):
                check = self.check(node, cid)
                when = self._reap_due(check) if check is not None else None
                if check is not None and when is not None and when <= now:
                    self.remove_service(tx, node, check.service_id)

    # ------------------------------------------------------------------- restore

    def reset_index(self, to: int) -> None:
        """Make the index go backwards, as after a snapshot restore, and abandon all watches."""
        with self.lock:
            self._index = to
            for node in self.nodes.values():
                node.create_index = min(node.create_index, to)
                node.modify_index = min(node.modify_index, to)
            for bucket in self.services.values():
                for svc in bucket.values():
                    svc.create_index = min(svc.create_index, to)
                    svc.modify_index = min(svc.modify_index, to)
            for cbucket in self.checks.values():
                for check in cbucket.values():
                    check.create_index = min(check.create_index, to)
                    check.modify_index = min(check.modify_index, to)
            for name, index in self._service_index.items():
                self._service_index[name] = min(index, to)
            self._extinction_index = min(self._extinction_index, to)
            for table, index in self._table_index.items():
                self._table_index[table] = min(index, to)
            self.kv.clamp(to)
            self.abandon_generation += 1
        if self.notify is not None:
            self.notify(frozenset({TOPIC_ALL}))
