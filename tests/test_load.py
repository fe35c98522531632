"""Peak-EWMA arithmetic and the failure score, checked against hand-computed values."""

import math

import pytest

from meshlib.load.metric import DEFAULT_RTT, LeastLoaded, PeakEwma


def test_new_endpoint_starts_at_default_rtt() -> None:
    m = PeakEwma(now=0.0)
    assert m.cost(0.0) == pytest.approx(DEFAULT_RTT)
    assert m.load(0.0) == pytest.approx(DEFAULT_RTT)


def test_peak_is_taken_at_once() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.001)
    m.observe(0.001, 0.050)
    assert m.cost(0.001) == pytest.approx(0.050)


def test_lower_samples_blend_by_elapsed_time() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.100, decay=10.0)
    m.observe(5.0, 0.010)
    w = math.exp(-5.0 / 10.0)
    assert m.cost(5.0) == pytest.approx(0.100 * w + 0.010 * (1 - w))


def test_cost_decays_towards_zero_while_idle() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.050, decay=10.0)
    assert m.cost(10.0) == pytest.approx(0.050 * math.exp(-1.0))
    # Reading twice does not decay twice.
    assert m.cost(10.0) == pytest.approx(0.050 * math.exp(-1.0))


def test_load_multiplies_by_pending_plus_one() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.010)
    m.start()
    m.start()
    assert m.load(0.0) == pytest.approx(0.030)
    m.finish(0.0, 0.010, failed=False)
    assert m.pending == 1


def test_fast_failure_does_not_lower_the_estimate() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.010)
    m.start()
    m.finish(1.0, 0.0001, failed=True)
    assert m.cost(1.0) == pytest.approx(0.010 * math.exp(-0.1))


def test_failures_raise_the_load() -> None:
    healthy, failing = LeastLoaded(now=0.0), LeastLoaded(now=0.0)
    for i in range(40):
        t = i * 0.01
        for m, fail in ((healthy, False), (failing, i % 3 == 0)):
            m.start()
            m.finish(t, 0.001, failed=fail)
    assert healthy.load(0.4) == pytest.approx(1.0)
    # about a third failing: multiplier 1/(1-f)^2 is roughly 2
    assert 1.6 < failing.load(0.4) < 3.0
    assert 0.25 < failing.failure_rate(0.4) < 0.45


def test_failure_score_decays_with_time() -> None:
    m = LeastLoaded(now=0.0, decay=10.0)
    for _ in range(20):
        m.start()
        m.finish(0.0, 0.001, failed=True)
    high = m.failure_rate(0.0)
    assert high > 0.6
    assert m.failure_rate(30.0) == pytest.approx(high * math.exp(-3.0))


def test_overloaded_endpoint_is_saturated_until_its_retry_after() -> None:
    m = PeakEwma(now=0.0, default_rtt=0.001)
    m.overloaded(until=5.0)
    assert m.load(1.0) > 1e6
    assert m.load(5.0) < 1.0


def test_cancel_releases_without_charging() -> None:
    m = LeastLoaded(now=0.0)
    m.start()
    m.cancel()
    assert m.pending == 0
    assert m.failure_rate(0.0) == 0.0
