"""Hedged (backup) requests end to end on loopback: who wins, what is cancelled, what it costs.

The clock is a ``ManualClock``: a hedge timer's sleep returns after one turn of the event loop,
and the race then gives an answer already on its way three more turns, so every call whose
original has not answered by then is hedged. The upstreams run in the test's own loop and add a
few milliseconds of latency, which is many turns, so "slow" needs no long waits, and a replica
that never answers (``hang``) is the stall.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import meshlib
from meshlib.clock import ManualClock
from meshlib.discovery.base import Target
from meshlib.load.window import LatencyWindow
from meshlib.pipeline.hedging import HedgeState, Hedging
from meshlib.retry.budget import RetryBudget
from meshlib.retry.hedge import HedgeBudgetPolicy, HedgePolicy, parse_hedge
from meshlib.scope.context import CallPolicy
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread

ALL = HedgeBudgetPolicy(percent=1.0)
"""A hedge budget that never refuses (each call may add one backup)."""
SLOW = 0.03
"""An upstream latency that is many turns of the loop even on a loaded machine, so the race
never mistakes it for an answer already on its way."""


def _client(
    ports: list[int],
    *,
    hedges: dict[str, HedgePolicy] | None = None,
    budget: HedgeBudgetPolicy = ALL,
) -> meshlib.AsyncMeshClient:
    config = meshlib.MeshConfig(
        hedges={"users": HedgePolicy(delay=0.05)} if hedges is None else hedges,
        hedge_budget=budget,
    )
    return meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": [f"127.0.0.1:{p}" for p in ports]}),
        config=config,
        clock=ManualClock(),
        rng=random.Random(7),
    )


async def _wait_closed(up: Upstream) -> None:
    for _ in range(200):  # bounded: 2 s at most
        if up.stats().open_connections == 0:
            return
        await asyncio.sleep(0.01)


async def test_a_hedge_wins_against_a_stalled_replica_and_the_loser_is_cancelled() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="stalled", hang=True)) as stalled,
        Upstream(UpstreamBehaviour(name="fast", body=b"fast", latency=SLOW)) as fast,
    ):
        async with _client([stalled.port, fast.port]) as client:
            # The caller does not wait for the loser: a stalled attempt left running would hold
            # each call for httpx's 5 s read timeout.
            async with asyncio.timeout(2.0):
                for _ in range(8):
                    r = await client.get("http://users/v1")
                    assert r.status_code == 200
                    assert r.text == "fast"
            state = client.mesh_state()["services"]["users"]
            # Every call sent one attempt to each replica: the backup always went elsewhere.
            # Each attempt on the stalled replica was cut off, so its connection was dropped
            # and never reused: one connection per call (a cancel may beat the request's
            # arrival, so connections, not requests, are counted there).
            assert stalled.stats().connections == 8
            assert fast.stats().total == 8
            hedge = state["hedge"]
            assert hedge["sent"] == 8
            # The primary landed on the stalled replica at least once (the hedge won) and on
            # the fast one at least once (the hedge lost); each loser was cancelled.
            assert hedge["won"] >= 1
            assert hedge["lost"] >= 1
            assert hedge["won"] + hedge["lost"] == 8
            # No leak: nothing in flight on either endpoint, the stalled replica's cut-off
            # connections were dropped (not pooled), and its health was not charged.
            for ep in state["endpoints"]:
                assert ep["in_flight"] == 0
                assert ep["state"] == "alive"
            pools = client.mesh._inner._pools
            stalled_pool = next(p for p in pools.values() if p.port == stalled.port)
            assert stalled_pool.open == 0
            assert not stalled_pool.idle
            await _wait_closed(stalled)
            assert stalled.stats().open_connections == 0


async def test_non_idempotent_calls_are_never_hedged() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", latency=SLOW)) as a,
        Upstream(UpstreamBehaviour(name="b", latency=SLOW)) as b,
    ):
        async with _client([a.port, b.port]) as client:
            for _ in range(5):
                r = await client.post("http://users/orders", content=b"x")
                assert r.status_code == 200
            assert a.stats().total + b.stats().total == 5
            # The same client hedges a GET, and an idempotent POST when told it is one.
            await client.get("http://users/orders")
            assert a.stats().total + b.stats().total == 7
            await client.post(
                "http://users/orders", content=b"x", extensions={"mesh": {"idempotent": True}}
            )
            assert a.stats().total + b.stats().total == 9


async def test_hedges_stop_when_the_budget_is_spent() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", latency=SLOW)) as a,
        Upstream(UpstreamBehaviour(name="b", latency=SLOW)) as b,
    ):
        budget = HedgeBudgetPolicy(percent=0.05)
        async with _client([a.port, b.port], budget=budget) as client:
            for _ in range(40):
                await client.get("http://users/")
            hedge = client.mesh_state()["services"]["users"]["hedge"]
    # 5% of 40 calls: the 20th and the 40th call may hedge, no other.
    assert hedge["sent"] == 2
    assert hedge["budget_refused"] == 38
    assert a.stats().total + b.stats().total == 42


async def test_a_hedge_also_draws_from_the_retry_budget() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", latency=SLOW)) as a,
        Upstream(UpstreamBehaviour(name="b", latency=SLOW)) as b,
    ):
        config = meshlib.MeshConfig(
            hedges={"users": HedgePolicy(delay=0.05)},
            hedge_budget=ALL,
            budget=meshlib.BudgetPolicy(min_per_sec=0, percent=0.1),
        )
        async with meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
            ),
            config=config,
            clock=ManualClock(),
        ) as client:
            for _ in range(20):
                await client.get("http://users/")
            state = client.mesh_state()["services"]["users"]
    assert state["hedge"]["sent"] == 2
    assert state["budget"]["retries_in_window"] == 2
    # A refusal by the retry budget gave the hedge budget its withdrawal back.
    assert state["hedge"]["budget"]["retries_in_window"] == 2


async def test_per_call_hedge_overrides_the_configuration() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", latency=SLOW)) as a,
        Upstream(UpstreamBehaviour(name="b", latency=SLOW)) as b,
    ):
        async with _client([a.port, b.port], hedges={}) as client:
            await client.get("http://users/")
            assert a.stats().total + b.stats().total == 1

            @meshlib.outbound(hedge=0.02)
            async def hedged() -> None:
                await client.get("http://users/")

            await hedged()
            assert a.stats().total + b.stats().total == 3
            await client.get("http://users/", extensions={"mesh": {"hedge": False}})
            assert a.stats().total + b.stats().total == 4


async def test_hedges_are_marked_in_spans_and_counted_in_metrics(
    spans: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    async with (
        Upstream(UpstreamBehaviour(name="stalled", hang=True)) as stalled,
        Upstream(UpstreamBehaviour(name="fast", latency=SLOW)) as fast,
    ):
        async with _client([stalled.port, fast.port]) as client:
            r = await client.get("http://users/")
            assert r.status_code == 200
    finished = spans.get_finished_spans()
    attempts = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert len(attempts) == 2
    backups = [s for s in attempts if s.attributes.get("mesh.hedge") is True]
    assert len(backups) == 1
    cancelled = [s for s in attempts if s.attributes.get("mesh.attempt.cancelled") is True]
    assert len(cancelled) == 1
    assert cancelled[0].attributes["network.peer.port"] == stalled.port
    assert cancelled[0].status.is_ok  # losing a race is not an error
    (call,) = [s for s in finished if s.name == "mesh users"]
    assert [e.name for e in call.events] == ["mesh.hedge"]
    data = metric_reader.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "mesh.client.hedges"
        for p in m.data.data_points
    ]
    assert sum(p.value for p in points) == 1
    assert {p.attributes["mesh.hedge.outcome"] for p in points} <= {"won", "lost"}
    # The cancelled loser left the active-requests count, as every attempt does.
    assert set(client.mesh._metrics.in_flight.values()) == {0}


async def test_a_failed_attempt_waits_for_the_other_instead_of_winning() -> None:
    async with (
        Upstream(
            UpstreamBehaviour(name="broken", latency=SLOW, fail_fraction=1.0, fail_status=503)
        ) as broken,
        Upstream(UpstreamBehaviour(name="slow", latency=2 * SLOW, body=b"slow")) as slow,
    ):
        async with _client([broken.port, slow.port]) as client:
            for _ in range(4):
                r = await client.get("http://users/", extensions={"mesh": {"retries": 0}})
                assert r.status_code == 200
                assert r.text == "slow"


async def test_a_cancelled_caller_cancels_both_attempts() -> None:
    async with (
        Upstream(UpstreamBehaviour(name="a", hang=True)) as a,
        Upstream(UpstreamBehaviour(name="b", hang=True)) as b,
    ):
        async with _client([a.port, b.port]) as client:
            task = asyncio.ensure_future(client.get("http://users/"))
            for _ in range(200):  # bounded: until both replicas have the request
                if a.stats().total + b.stats().total == 2:
                    break
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for ep in client.mesh_state()["services"]["users"]["endpoints"]:
                assert ep["in_flight"] == 0
            assert all(p.open == 0 for p in client.mesh._inner._pools.values())


def test_the_sync_client_never_hedges(caplog: pytest.LogCaptureFixture) -> None:
    a = UpstreamThread(UpstreamBehaviour(name="a", latency=SLOW))
    b = UpstreamThread(UpstreamBehaviour(name="b", latency=SLOW))
    a.start()
    b.start()
    try:
        config = meshlib.MeshConfig(hedges={"users": HedgePolicy(delay=0.001)}, hedge_budget=ALL)
        caplog.set_level("INFO", logger="meshlib.hedging")
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery(
                {"users": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
            ),
            config=config,
        ) as client:
            for _ in range(5):
                client.get("http://users/")
            assert "hedge" not in client.mesh_state()["services"]["users"]
        assert a.stats().total + b.stats().total == 5
        # Said once, where the operator looks, rather than ignored in silence.
        assert "the sync MeshClient does not hedge" in caplog.text
    finally:
        a.stop()
        b.stop()


# -- the pure decisions ------------------------------------------------------------------------


def test_latency_window_quantile_follows_recent_samples() -> None:
    window = LatencyWindow(0.95, size=100, every=10)
    assert window.value() is None
    for i in range(100):
        window.record(0.001 * (i + 1))
    assert window.value() == pytest.approx(0.095)
    for _ in range(100):  # the old samples fall out of the ring
        window.record(0.5)
    assert window.value() == pytest.approx(0.5)
    window.record(float("nan"))  # ignored
    assert window.count == 200


def test_quantile_delay_needs_samples_and_has_a_floor() -> None:
    clock = ManualClock()
    state = HedgeState(0.9, RetryBudget(clock=clock))
    policy = HedgePolicy(min_delay=0.005, min_samples=20)
    assert Hedging.delay(policy, state) is None
    for _ in range(40):
        state.window.record(0.001)
    assert Hedging.delay(policy, state) == 0.005  # the floor, not the 1 ms quantile
    for _ in range(40):
        state.window.record(0.030)
    assert Hedging.delay(policy, state) == pytest.approx(0.030)
    assert Hedging.delay(HedgePolicy(delay=0.2), state) == 0.2
    # A policy's own quantile reads the same window: p50 of 40 x 1 ms and 40 x 30 ms.
    assert Hedging.delay(HedgePolicy(quantile=0.5, min_delay=0), state) == pytest.approx(0.001)


def test_default_quantile_is_one_minus_the_budget() -> None:
    hedging = Hedging({}, HedgeBudgetPolicy(percent=0.05), ManualClock())
    target = Target("users")
    state = hedging.state(target, HedgePolicy())
    assert state.window.quantile == pytest.approx(0.95)
    assert hedging.state(target, HedgePolicy(quantile=0.99)) is state


def test_hedge_settings_parse_and_refuse_typos() -> None:
    assert parse_hedge("p99") == HedgePolicy(quantile=0.99)
    assert parse_hedge("40ms") == HedgePolicy(delay=0.04)
    assert parse_hedge("on") == HedgePolicy()
    assert parse_hedge("off") is None
    with pytest.raises(ValueError, match="not a hedge setting"):
        parse_hedge("fast")
    assert CallPolicy(hedge="p90").hedge == HedgePolicy(quantile=0.9)
    assert CallPolicy(hedge=0.1).hedge == HedgePolicy(delay=0.1)
    assert CallPolicy(hedge="off").hedge is False
    with pytest.raises(ValueError, match="hedge"):
        CallPolicy(hedge="soon")


def test_hedge_configuration_from_the_environment() -> None:
    config = meshlib.MeshConfig.from_env(
        {
            "MESH_HEDGE": "users=p99;orders=40ms;audit=off",
            "MESH_HEDGE_MIN_DELAY": "2ms",
            "MESH_HEDGE_BUDGET_PERCENT": "2",
        }
    )
    assert config.hedges["users"] == HedgePolicy(quantile=0.99, min_delay=0.002)
    assert config.hedges["orders"].delay == 0.04
    assert "audit" not in config.hedges
    assert config.hedge_budget.percent == pytest.approx(0.02)
    with pytest.raises(meshlib.ConfigError, match="MESH_HEDGE for users"):
        meshlib.MeshConfig.from_env({"MESH_HEDGE": "users=sometimes"})
    with pytest.raises(meshlib.ConfigError, match="MESH_HEDGE_BUDGET_PERCENT"):
        meshlib.MeshConfig.from_env({"MESH_HEDGE_BUDGET_PERCENT": "0"})


class _TurnsTransport(httpx.AsyncBaseTransport):
    """An inner transport (pure logic, no network) that answers after ``turns`` loop turns."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        for _ in range(self.turns):
            await asyncio.sleep(0)
        return httpx.Response(200, content=b"ok")


@pytest.mark.parametrize(("turns", "hedged"), [(1, False), (2, False), (50, True)])
async def test_no_backup_for_an_answer_that_has_already_arrived(turns: int, hedged: bool) -> None:
    # The manual clock's timer fires after one turn; an answer that needs only a turn or two
    # more was already on its way and gets no backup, one that needs many does.
    inner = _TurnsTransport(turns)
    async with meshlib.AsyncMeshClient(
        discovery=meshlib.StaticDiscovery({"users": ["127.0.0.1:1", "127.0.0.1:2"]}),
        config=meshlib.MeshConfig(hedges={"users": HedgePolicy(delay=0.05)}, hedge_budget=ALL),
        clock=ManualClock(),
        transport=inner,
    ) as client:
        for _ in range(5):
            assert (await client.get("http://users/")).status_code == 200
        sent = client.mesh_state()["services"]["users"]["hedge"]["sent"]
    assert sent == (5 if hedged else 0)
    assert inner.sent == 5 + sent


async def test_a_caller_cancelled_before_the_backup_leaves_nothing_running() -> None:
    async with Upstream(UpstreamBehaviour(name="a", hang=True)) as a:
        async with Upstream(UpstreamBehaviour(name="b", hang=True)) as b:
            # The real clock and a long delay: the caller is cancelled while the race waits
            # for its timer, before any backup.
            client = meshlib.AsyncMeshClient(
                discovery=meshlib.StaticDiscovery(
                    {"users": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
                ),
                config=meshlib.MeshConfig(
                    hedges={"users": HedgePolicy(delay=30.0)}, hedge_budget=ALL
                ),
            )
            async with client:
                task = asyncio.ensure_future(client.get("http://users/"))
                for _ in range(200):  # bounded: until the first attempt has arrived
                    if a.stats().total + b.stats().total == 1:
                        break
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert a.stats().total + b.stats().total == 1  # no backup was sent
                # Every task the race started is gone with it, the hedge timer included.
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                assert not [t for t in others if "_send" in repr(t.get_coro())]
                assert not [t for t in others if "sleep" in repr(t.get_coro())]
                assert all(p.open == 0 for p in client.mesh._inner._pools.values())


def test_a_backup_paid_for_but_not_sent_is_refunded_to_both_budgets() -> None:
    clock = ManualClock()
    retry = RetryBudget(meshlib.BudgetPolicy(min_per_sec=0, percent=1.0), clock=clock)
    state = HedgeState(0.95, RetryBudget(meshlib.BudgetPolicy(min_per_sec=0), clock=clock))
    for _ in range(10):
        retry.deposit()
        state.budget.deposit()
    assert Hedging.spend(state, retry)
    assert (state.sent, retry.balance(), state.budget.balance()) == (1, 9.0, 1.0)
    Hedging.refund(state, retry)
    assert (state.sent, retry.balance(), state.budget.balance()) == (0, 10.0, 2.0)
