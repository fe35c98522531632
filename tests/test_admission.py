"""Inbound admission decisions, I/O-free on a manual clock: buckets per caller, AIMD, the order."""

import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.limit import Admission, AdmissionPolicy, AimdLimit, KeyedRateLimit, Refusal, Ticket
from meshlib.limit.keyed import OVERFLOW_KEY
from meshlib.limit.limits import RateLimit


def test_take_never_waits_and_says_when_the_next_token_comes() -> None:
    clock = ManualClock()
    bucket = RateLimit(rate=10, burst=2, clock=clock)
    assert bucket.take() == 0.0
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.1)  # a refusal takes nothing: no debt
    clock.advance(0.05)
    assert bucket.take() == pytest.approx(0.05)
    assert not bucket.full()
    clock.advance(0.2)
    assert bucket.full()
    assert bucket.refused == 3


def test_keyed_buckets_isolate_callers() -> None:
    clock = ManualClock()
    limit = KeyedRateLimit(rate=1, burst=2, max_keys=10, clock=clock)
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limit.take("b") == 0.0
    assert limit.take("b") == 0.0
    assert limit.take("b") > 0
    assert len(limit) == 2


def test_keyed_table_is_bounded_and_forgets_only_full_buckets() -> None:
    clock = ManualClock()
    limit = KeyedRateLimit(rate=1, burst=1, max_keys=2, clock=clock)
    assert limit.take("a") == 0.0
    assert limit.take("b") == 0.0
    # The table is full and "a" has not refilled: "c" and "d" share the overflow bucket.
    assert limit.take("c") == 0.0
    assert limit.take("d") > 0
    assert limit.overflowed == 2
    assert len(limit) == 2
    clock.advance(1.0)  # "a" is full again: forgetting it loses nothing, so "e" takes its place
    assert limit.take("e") == 0.0
    assert limit.take("e") > 0
    assert len(limit) == 2
    assert OVERFLOW_KEY == "<overflow>"


def test_aimd_backs_off_once_per_window_and_grows_only_when_used() -> None:
    clock = ManualClock()
    aimd = AimdLimit(minimum=2, maximum=20, latency_target=0.1, clock=clock)
    assert aimd.limit == 20
    # A burst of slow requests finishing together is one congestion signal, not twenty.
    for _ in range(20):
        aimd.sample(0.5, in_flight=20)
    assert aimd.limit == 18
    assert aimd.decreases == 1
    clock.advance(0.1)
    aimd.sample(0.5, in_flight=20)
    assert aimd.limit == 16  # 18 * 0.9 = 16.2
    for _ in range(100):
        clock.advance(0.1)
        aimd.sample(0.0, in_flight=1, failed=True)
    assert aimd.limit == 2  # never below the minimum
    # Fast requests while the limit is in use raise it by about one per limit's worth, and
    # only up to where half of it is used (2 in flight justify a limit of 4, not more).
    for _ in range(10):
        aimd.sample(0.01, in_flight=2)
    assert aimd.limit == 4
    before = aimd.limit
    for _ in range(50):
        aimd.sample(0.01, in_flight=1)  # idling far below the limit teaches nothing
    assert aimd.limit == before
    for _ in range(10_000):
        aimd.sample(0.01, in_flight=20)
    assert aimd.limit == 20  # never above the ceiling


def test_expired_deadline_is_refused_first_and_costs_no_token() -> None:
    clock = ManualClock()
    adm = Admission(AdmissionPolicy(rate=1, burst=1, max_in_flight=1), clock)
    shed = adm.check("a", 0.0)
    assert isinstance(shed, Refusal)
    assert (shed.status, shed.reason, shed.retry_after) == (504, "deadline", None)
    ticket = adm.check("a", 5.0)
    assert isinstance(ticket, Ticket)  # the token and the slot were still there
    assert adm.snapshot()["shed"] == {"deadline": 1}


def test_rate_refusal_gives_the_slot_back_and_concurrency_refusal_keeps_the_token() -> None:
    clock = ManualClock()
    adm = Admission(AdmissionPolicy(rate=2, burst=1, max_in_flight=1, retry_after=2.5), clock)
    first = adm.check(None, None)
    assert isinstance(first, Ticket)
    busy = adm.check(None, None)
    assert isinstance(busy, Refusal)
    assert (busy.status, busy.reason, busy.retry_after) == (503, "concurrency", 3)
    first.done()
    first.done()  # idempotent: the slot is freed once
    assert adm.in_flight == 0
    limited = adm.check(None, None)
    assert isinstance(limited, Refusal)
    assert (limited.status, limited.reason, limited.retry_after) == (429, "rate", 1)
    assert adm.in_flight == 0  # the rate refusal did not keep the slot
    clock.advance(0.5)
    assert isinstance(adm.check(None, None), Ticket)
    assert adm.snapshot()["rejected"] == {"rate": 1, "concurrency": 1}


def test_min_deadline_sheds_requests_that_cannot_be_served_in_time() -> None:
    adm = Admission(AdmissionPolicy(min_deadline=0.010), ManualClock())
    assert isinstance(adm.check(None, 0.005), Refusal)
    assert isinstance(adm.check(None, 0.050), Ticket)
    assert isinstance(adm.check(None, None), Ticket)  # no deadline: nothing to shed


def test_adaptive_limit_moves_the_in_flight_cap() -> None:
    clock = ManualClock()
    adm = Admission(
        AdmissionPolicy(max_in_flight=10, adaptive=True, latency_target=0.1, min_in_flight=2),
        clock,
    )
    for _ in range(30):
        tickets = [adm.check(None, None) for _ in range(adm.limit or 0)]
        clock.advance(0.2)  # every request took twice the target
        for t in tickets:
            assert isinstance(t, Ticket)
            t.done()
    assert adm.limit == 2
    assert isinstance(adm.check(None, None), Ticket)
    assert isinstance(adm.check(None, None), Ticket)
    assert isinstance(adm.check(None, None), Refusal)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"rate": 0}, "inbound rate must be a positive number per second, got 0"),
        ({"rate": 10, "burst": 0.5}, "inbound burst must be a number >= 1"),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1, got 0"),
        ({"adaptive": True}, "the adaptive limit needs max_in_flight"),
        ({"max_in_flight": 4, "min_in_flight": 5}, "min_in_flight must be within"),
        ({"latency_target": 0}, "latency_target must be a positive number of seconds"),
        ({"retry_after": -1}, "retry_after must be >= 0 seconds"),
        ({"max_callers": 0}, "max_callers must be >= 1"),
    ],
)
def test_bad_policies_say_what_is_wrong(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdmissionPolicy(**kw)  # type: ignore[arg-type]


def test_inbound_policy_from_env() -> None:
    config = meshlib.MeshConfig.from_env(
        {
            "MESH_INBOUND_RATE_LIMIT": "100/s:20",
            "MESH_INBOUND_MAX_IN_FLIGHT": "64",
            "MESH_INBOUND_ADAPTIVE": "true",
            "MESH_INBOUND_MIN_IN_FLIGHT": "4",
            "MESH_INBOUND_LATENCY_TARGET": "150ms",
            "MESH_INBOUND_RETRY_AFTER": "2s",
            "MESH_INBOUND_MIN_DEADLINE": "5ms",
            "MESH_INBOUND_CALLER_HEADER": "X-Mesh-Caller",
            "MESH_INBOUND_MAX_CALLERS": "50",
        }
    )
    assert config.inbound == AdmissionPolicy(
        rate=100,
        burst=20,
        max_in_flight=64,
        adaptive=True,
        min_in_flight=4,
        latency_target=0.15,
        retry_after=2.0,
        min_deadline=0.005,
        caller_header="x-mesh-caller",
        max_callers=50,
    )
    assert meshlib.MeshConfig.from_env({}).inbound == AdmissionPolicy()
    off = meshlib.MeshConfig.from_env({"MESH_INBOUND_SHED_EXPIRED": "off"})
    assert not off.inbound.shed_expired


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MESH_INBOUND_RATE_LIMIT": "fast"}, r"MESH_INBOUND_RATE_LIMIT='fast' is not a number"),
        ({"MESH_INBOUND_RATE_LIMIT": "-5"}, r"MESH_INBOUND_\*: inbound rate must be a positive"),
        ({"MESH_INBOUND_RATE_LIMIT": "10:x"}, r"MESH_INBOUND_RATE_LIMIT='x' is not a number"),
        ({"MESH_INBOUND_MAX_IN_FLIGHT": "lots"}, "MESH_INBOUND_MAX_IN_FLIGHT='lots' is not an int"),
        ({"MESH_INBOUND_MAX_IN_FLIGHT": "0"}, "max_in_flight must be >= 1, got 0"),
        (
            {"MESH_INBOUND_ADAPTIVE": "yes"},
            "MESH_INBOUND_ADAPTIVE=true needs MESH_INBOUND_MAX_IN_FLIGHT",
        ),
        ({"MESH_INBOUND_ADAPTIVE": "maybe"}, "MESH_INBOUND_ADAPTIVE='maybe' is not a boolean"),
        ({"MESH_INBOUND_LATENCY_TARGET": "soon"}, "MESH_INBOUND_LATENCY_TARGET='soon' is not a d"),
        ({"MESH_INBOUND_CALLER_HEADER": "x caller"}, "is not an HTTP header name"),
    ],
)
def test_bad_inbound_env_gives_clear_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(meshlib.ConfigError, match=message):
        meshlib.MeshConfig.from_env(env)
