"""A shared ``MeshClient``'s first calls from several threads at once share one state per service.

``MeshClient`` is documented thread-safe, and the first calls to a service often arrive together
(a thread pool warming up). Each test makes two threads meet inside the code that builds one
piece of per-service state, by a clock whose first reading from that module waits (bounded) for
a second one: when the building is not serialized, both threads build their own copy, and the
calls holding the losing copy bypass the limit, the budget or the endpoint statistics it stands
for. End to end against a loopback upstream.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time

import meshlib
from meshlib.balance.balancer import P2C
from meshlib.clock import SYSTEM_CLOCK
from meshlib.discovery.base import Target
from meshlib.load.metric import LoadMetric
from meshlib.routing.addressing import Addressing
from meshlib.routing.router import Router
from meshlib.upstream import UpstreamBehaviour, UpstreamThread


class Meeting:
    """The first thread to arrive waits up to ``patience`` seconds for a second one."""

    def __init__(self, patience: float = 0.5) -> None:
        self._patience = patience
        self._lock = threading.Lock()
        self._arrived = 0
        self._second = threading.Event()

    def arrive(self) -> None:
        with self._lock:
            self._arrived += 1
            first = self._arrived == 1
        if first:
            self._second.wait(self._patience)
        else:
            self._second.set()


class MeetingClock:
    """The system clock, except that readings taken from module ``where`` meet."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._meeting = Meeting()

    def now(self) -> float:
        if sys._getframe(1).f_globals.get("__name__") == self._where:
            self._meeting.arrive()
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("not used")

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class MeetingBalancer(P2C):
    """P2C whose first two new endpoint metrics meet: the router has read the endpoint states
    it keeps by then, and not yet written the new ones."""

    def __init__(self) -> None:
        super().__init__()
        self.meeting = Meeting()

    def new_metric(self, now: float) -> LoadMetric:
        self.meeting.arrive()
        return super().new_metric(now)


def _two_first_calls(where: str, config: meshlib.MeshConfig) -> tuple[list[str], dict[str, object]]:
    with UpstreamThread(UpstreamBehaviour(name="a")) as up:
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]}),
            config=config,
            clock=MeetingClock(where),
        ) as client:

            def call() -> str:
                try:
                    return str(client.get("http://users/").status_code)
                except meshlib.RateLimited:
                    return "refused"

            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(lambda _: call(), range(2)))
            state = client.mesh_state()["services"]["users"]
    return sorted(outcomes), state


def test_two_first_calls_share_one_rate_limit() -> None:
    config = meshlib.MeshConfig(limits={"users": meshlib.LimitPolicy(rate=1, burst=1, wait=False)})
    outcomes, state = _two_first_calls("meshlib.limit.limits", config)
    assert outcomes == ["200", "refused"]  # one token for both, not one bucket each
    assert state["limits"]["rate_refused"] == 1  # type: ignore[index]


def test_two_first_calls_share_one_retry_budget() -> None:
    outcomes, state = _two_first_calls("meshlib.retry.budget", meshlib.MeshConfig())
    assert outcomes == ["200", "200"]
    assert state["budget"]["calls_in_window"] == 2  # type: ignore[index]


def test_two_first_lookups_share_one_service_state_and_health_group() -> None:
    router = Router(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:1", "127.0.0.1:2"]}),
        balancer=MeetingBalancer(),
        clock=SYSTEM_CLOCK,
        addressing=Addressing(),
    )
    target = Target("users")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: router.resolve_sync(target), range(2))
    # One set of endpoint states: an attempt's outcome feeds what the balancer reads next.
    assert first is second
    assert router.service(target) is first
    # One health group, whose members are these endpoints' health (panic mode counts them).
    members = router._groups[target].members
    assert [id(m) for m in members] == [id(st.health) for st in first.eps.states]
