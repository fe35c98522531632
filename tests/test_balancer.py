"""Balancer statistics with a seeded RNG and a manual clock."""

import random
from collections import Counter

import pytest

from meshlib.balance.balancer import P2C, EndpointSet, EndpointState, RoundRobin, make_balancer
from meshlib.endpoint import Endpoint
from meshlib.load.metric import LoadMetric


def _set(balancer, n: int = 3, weights=None) -> EndpointSet:  # type: ignore[no-untyped-def]
    weights = weights or [1.0] * n
    return EndpointSet(
        [
            EndpointState(
                Endpoint(host="127.0.0.1", port=8000 + i, weight=w), balancer.new_metric(0.0)
            )
            for i, w in enumerate(weights)
        ]
    )


class _Dead:
    def available(self, now: float) -> bool:
        return False

    def admit(self, now: float) -> bool:
        return False

    def record(self, now: float, *, failure: bool, probe: bool = False) -> None:
        pass

    def release(self) -> None:
        pass


def test_p2c_prefers_the_less_loaded_endpoint() -> None:
    b = P2C(metric="least-loaded", rng=random.Random(1))
    eps = _set(b, 2)
    for _ in range(5):
        eps.states[0].metric.start()
    picks = Counter(b.pick(eps, 0.0).address for _ in range(200))
    assert picks == {"127.0.0.1:8001": 200}


def test_p2c_peak_ewma_avoids_a_slow_endpoint() -> None:
    b = P2C(metric="peak-ewma", rng=random.Random(2))
    eps = _set(b, 3)
    for i, st in enumerate(eps.states):
        st.metric.start()
        st.metric.finish(0.0, 0.050 if i == 2 else 0.001, failed=False)
    picks = Counter(b.pick(eps, 0.1).address for _ in range(3000))
    assert picks["127.0.0.1:8002"] == 0
    assert abs(picks["127.0.0.1:8000"] - picks["127.0.0.1:8001"]) < 300


def test_p2c_sends_a_fast_failing_endpoint_less_than_its_share() -> None:
    rng = random.Random(3)
    b = P2C(metric="peak-ewma", rng=rng)
    eps = _set(b, 3)
    sent: Counter[str] = Counter()
    now = 0.0
    for _ in range(6000):
        now += 0.0025
        st = b.pick(eps, now)
        sent[st.address] += 1
        failed = st.address == "127.0.0.1:8002" and rng.random() < 0.3
        st.metric.start()
        st.metric.finish(now, 0.001, failed=failed)
    assert sent["127.0.0.1:8002"] / 6000 < 0.15


def test_weights_are_honoured_when_loads_are_equal() -> None:
    b = P2C(metric="least-loaded", rng=random.Random(4))
    eps = _set(b, 3, weights=[1.0, 2.0, 5.0])
    picks = Counter(b.pick(eps, 0.0).address for _ in range(16000))
    shares = [picks[f"127.0.0.1:{8000 + i}"] / 16000 for i in range(3)]
    assert shares == pytest.approx([0.125, 0.25, 0.625], abs=0.02)


def test_weighted_sampler_is_proportional() -> None:
    b = P2C(rng=random.Random(5))
    eps = _set(b, 3, weights=[1.0, 3.0, 6.0])
    rng = random.Random(6)
    counts = Counter(eps.sample(rng) for _ in range(100_000))
    assert counts[0] / 1e5 == pytest.approx(0.1, abs=0.01)
    assert counts[1] / 1e5 == pytest.approx(0.3, abs=0.01)
    assert counts[2] / 1e5 == pytest.approx(0.6, abs=0.01)


def test_round_robin_cycles_and_honours_weights() -> None:
    b = RoundRobin()
    eps = _set(b, 3)
    order = [b.pick(eps, 0.0).endpoint.port for _ in range(6)]
    assert sorted(order[:3]) == [8000, 8001, 8002]
    assert order[:3] == order[3:]
    weighted = _set(b, 2, weights=[1.0, 3.0])
    counts = Counter(b.pick(weighted, 0.0).endpoint.port for _ in range(400))
    assert counts == {8000: 100, 8001: 300}


def test_dead_endpoints_are_skipped_before_an_attempt_is_spent() -> None:
    b = P2C(rng=random.Random(7))
    eps = _set(b, 4)
    eps.states[0].health = _Dead()
    assert all(b.pick(eps, 0.0) is not eps.states[0] for _ in range(500))


def test_panic_mode_spreads_over_all_when_most_are_dead() -> None:
    b = P2C(metric="least-loaded", rng=random.Random(8))
    eps = _set(b, 4)
    for st in eps.states[:3]:
        st.health = _Dead()
    picks = Counter(b.pick(eps, 0.0).address for _ in range(400))
    assert len(picks) >= 3


def test_pick_is_constant_time_in_the_number_of_endpoints() -> None:
    calls = 0

    class Counting(LoadMetric):
        def load(self, now: float) -> float:
            nonlocal calls
            calls += 1
            return 1.0

    for n in (3, 1000):
        b = P2C(rng=random.Random(9))
        eps = EndpointSet(
            [EndpointState(Endpoint(host="127.0.0.1", port=1000 + i), Counting()) for i in range(n)]
        )
        calls = 0
        for _ in range(100):
            b.pick(eps, 0.0)
        assert calls == 200


def test_avoid_steers_a_retry_elsewhere() -> None:
    b = P2C(rng=random.Random(10))
    eps = _set(b, 3)
    first = eps.states[1]
    assert all(b.pick(eps, 0.0, avoid=first) is not first for _ in range(300))


def test_unknown_balancer_name_is_refused() -> None:
    with pytest.raises(ValueError, match="balancer must be one of"):
        make_balancer("random")
