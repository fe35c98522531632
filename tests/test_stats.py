"""Per-endpoint counters and recent percentiles."""

from meshlib.load.stats import EndpointStats


def test_counts_and_percentiles() -> None:
    s = EndpointStats(now=0.0, window=10.0)
    for i in range(100):
        s.record(1.0, 0.001 if i < 98 else 0.100, failed=i % 10 == 0)
    assert s.requests == 100
    assert s.failures == 10
    p50 = s.percentile(1.0, 50)
    p99 = s.percentile(1.0, 99)
    assert p50 is not None
    assert p99 is not None
    assert 0.001 <= p50 < 0.0013
    assert 0.1 <= p99 < 0.13


def test_windows_rotate_out_old_latencies() -> None:
    s = EndpointStats(now=0.0, window=10.0)
    s.record(1.0, 0.5, failed=False)
    s.record(12.0, 0.001, failed=False)
    p = s.percentile(12.0, 99)
    assert p is not None
    assert p >= 0.5  # the previous window still counts
    assert s.percentile(35.0, 99) is None
    assert s.requests == 2


def test_empty() -> None:
    assert EndpointStats().percentile(0.0, 50) is None
