"""Consul discovery end to end: FakeConsul, real upstreams, both clients."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import closing

import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


def _settings(c: FakeConsul, **kw: object) -> meshlib.ConsulSettings:
    return meshlib.ConsulSettings(host="127.0.0.1", port=c.port, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def two() -> AsyncIterator[list[Upstream]]:
    ups = [Upstream(UpstreamBehaviour(name=n)) for n in "ab"]
    for u in ups:
        await u.start()
    yield ups
    for u in ups:
        await u.stop()


def _ports(d: meshlib.ConsulDiscovery) -> list[int]:
    res = d.lookup(Target("users"))
    return [] if res is None else [e.port for e in res.endpoints]


async def _until(cond, limit: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_consul_http_addr_selects_consul_and_routes(
    fake_consul_env: FakeConsul, two: list[Upstream]
) -> None:
    for i, u in enumerate(two):
        fake_consul_env.register_service(
            "users", service_id=f"u{i}", address="127.0.0.1", port=u.port
        )
    async with meshlib.AsyncMeshClient() as client:
        seen = {(await client.get("http://users/")).headers["x-upstream"] for _ in range(30)}
        consul_form = await client.get("http://users.service.consul/")
    assert seen == {"a", "b"}
    assert consul_form.status_code == 200


async def test_deregistration_maintenance_and_ttl_expiry_are_followed(
    two: list[Upstream],
) -> None:
    now = [100.0]
    with FakeConsul(clock=lambda: now[0]) as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        c.register_service(
            "users",
            service_id="u1",
            address="127.0.0.1",
            port=two[1].port,
            ttl="10s",
            status="passing",
        )
        d = meshlib.ConsulDiscovery(_settings(c))
        async with meshlib.AsyncMeshClient(discovery=d) as client:

            async def served() -> set[str]:
                return {
                    (await client.get("http://users/")).headers["x-upstream"] for _ in range(20)
                }

            assert await served() == {"a", "b"}
            now[0] += 11  # TTL expires: u1 turns critical
            c.tick()
            await _until(lambda: len(d.lookup(Target("users")).endpoints) == 1)  # type: ignore[union-attr]
            assert await served() == {"a"}
            c.set_check_status("service:u1", "passing")
            c.set_service_maintenance("u0", True, reason="deploy")
            await _until(lambda: _ports(d) == [two[1].port])
            assert await served() == {"b"}
            c.set_service_maintenance("u0", False)
            c.deregister("u1")
            await _until(lambda: _ports(d) == [two[0].port])
            assert await served() == {"a"}
            c.deregister("u0")
            await _until(lambda: d.lookup(Target("users")).endpoints == ())  # type: ignore[union-attr]
            with pytest.raises(meshlib.NoEndpointsAvailable, match="consul"):
                await client.get("http://users/")
            c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
            await _until(lambda: len(d.lookup(Target("users")).endpoints) == 1)  # type: ignore[union-attr]
            assert await served() == {"a"}


async def test_consul_down_at_start_fails_clearly_within_a_bound() -> None:
    with FakeConsul() as c:
        port = c.port
    d = meshlib.ConsulDiscovery(
        meshlib.ConsulSettings(host="127.0.0.1", port=port, token="s3cr3t"),
        meshlib.ConsulOptions(first_timeout=1.0),
    )
    async with meshlib.AsyncMeshClient(discovery=d) as client:
        start = time.monotonic()
        with pytest.raises(meshlib.DiscoveryError) as info:
            await client.get("http://users/")
    assert time.monotonic() - start < 1.5
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cr3t" not in str(info.value)


async def test_consul_hanging_at_start_times_out() -> None:
    with FakeConsul() as c:
        c.hang(True)
        d = meshlib.ConsulDiscovery(_settings(c), meshlib.ConsulOptions(first_timeout=0.3))
        with pytest.raises(meshlib.DiscoveryError, match="no answer"):
            await d.resolve(Target("users"))
        c.hang(False)
        d.close()


async def test_consul_down_mid_run_keeps_serving_last_known(
    two: list[Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshlib.discovery")
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        d = meshlib.ConsulDiscovery(_settings(c))
        async with meshlib.AsyncMeshClient(discovery=d) as client:
            assert (await client.get("http://users/")).status_code == 200
            c.down()
            await _until(lambda: d.lookup(Target("users")).stale)  # type: ignore[union-attr]
            for _ in range(50):
                assert (await client.get("http://users/")).status_code == 200
            state = client.mesh_state()["services"]["users"]
            assert state["stale"] is True
            assert state["staleness_s"] >= 0
            assert state["discovery"]["errors"] >= 1
            assert state["discovery"]["last_error"]
            c.up()
            await _until(lambda: not d.lookup(Target("users")).stale, limit=5.0)  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "serving the last known" in r.getMessage()]
    assert len(warnings) == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_errors_and_malformed_answers_never_empty_the_set(two: list[Upstream]) -> None:
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        d = meshlib.ConsulDiscovery(_settings(c))
        await d.resolve(Target("users"))
        c.fail_next(3, status=500)
        c.register_service("other", service_id="o", address="127.0.0.1", port=1)
        await asyncio.sleep(0.3)
        res = d.lookup(Target("users"))
        assert res is not None
        assert len(res.endpoints) == 1
        d.close()


async def test_max_staleness_turns_stale_data_into_an_error(two: list[Upstream]) -> None:
    clock = ManualClock()
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        d = meshlib.ConsulDiscovery(
            _settings(c), meshlib.ConsulOptions(max_staleness=60.0), clock=clock
        )
        await d.resolve(Target("users"))
        c.down()
        await _until(lambda: d.lookup(Target("users")).stale)  # type: ignore[union-attr]
        clock.advance(30)
        assert d.lookup(Target("users")) is not None
        clock.advance(31)
        with pytest.raises(meshlib.DiscoveryError, match="MESH_DISCOVERY_MAX_STALENESS"):
            d.lookup(Target("users"))
        d.close()


async def test_invalid_names_never_reach_consul() -> None:
    with FakeConsul() as c:
        d = meshlib.ConsulDiscovery(_settings(c))
        for bad in ("../kv/x", "users/../../kv", "a" * 64, "-users", "us ers"):
            with pytest.raises(meshlib.DiscoveryError, match="not a valid Consul name"):
                await d.resolve(Target(bad))
        assert [r for r in c.requests if "/v1/health" in r.path] == []
        d.close()


async def test_hostile_registry_data_is_validated(two: list[Upstream]) -> None:
    with FakeConsul() as c:
        c.register_service("users", service_id="good", address="127.0.0.1", port=two[0].port)
        c.register_service("users", service_id="meta", address="169.254.169.254", port=80)
        c.register_service("users", service_id="noport", address="127.0.0.1", port=0)
        c.register_service("users", service_id="evil", address="evil host", port=80)
        d = meshlib.ConsulDiscovery(_settings(c))
        res = await d.resolve(Target("users"))
        assert res is not None
        assert [e.port for e in res.endpoints] == [two[0].port]
        d.close()


async def test_weights_tags_and_node_address_fallback(two: list[Upstream]) -> None:
    with FakeConsul(node_address="127.0.0.1") as c:
        c.register_service("users", service_id="u0", port=two[0].port, weights=(5, 1), tags=["v2"])
        c.register_service("users", service_id="u1", address="127.0.0.1", port=two[1].port)
        d = meshlib.ConsulDiscovery(_settings(c))
        res = await d.resolve(Target("users"))
        assert res is not None
        by_port = {e.port: e for e in res.endpoints}
        assert by_port[two[0].port].host == "127.0.0.1"
        assert by_port[two[0].port].weight == 5
        tagged = await d.resolve(Target("users", tag="v2"))
        assert tagged is not None
        assert [e.port for e in tagged.endpoints] == [two[0].port]
        d.close()


async def test_watch_is_a_blocking_query_not_polling(two: list[Upstream]) -> None:
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        d = meshlib.ConsulDiscovery(_settings(c), meshlib.ConsulOptions(wait=5.0))
        await d.resolve(Target("users"))
        await asyncio.sleep(0.5)
        health = [r for r in c.requests if r.path.startswith("/v1/health/service/users")]
        assert len(health) == 2  # the first read, then one blocking query still waiting
        assert "index" in health[1].query
        assert "stale" in health[0].query
        d.close()


async def test_index_going_backwards_resets_the_watch(two: list[Upstream]) -> None:
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        d = meshlib.ConsulDiscovery(_settings(c))
        await d.resolve(Target("users"))
        await asyncio.to_thread(c.wait_for_blocking_queries, 1)
        c.reset_index(1)  # the parked query returns at once with a lower index
        await asyncio.sleep(0.2)
        c.register_service("users", service_id="u1", address="127.0.0.1", port=two[1].port)
        await _until(lambda: len(d.lookup(Target("users")).endpoints) == 2)  # type: ignore[union-attr]
        d.close()


def test_sync_client_with_consul(two_threads: list[UpstreamThread]) -> None:
    with FakeConsul() as c:
        for i, u in enumerate(two_threads):
            c.register_service("users", service_id=f"u{i}", address="127.0.0.1", port=u.port)
        with meshlib.MeshClient(discovery=meshlib.ConsulDiscovery(_settings(c))) as client:
            seen = {client.get("http://users/").headers["x-upstream"] for _ in range(30)}
            json.dumps(client.mesh_state())
    assert seen == {"a", "b"}


@pytest.fixture
def two_threads() -> list[UpstreamThread]:
    ups = [UpstreamThread(UpstreamBehaviour(name=n)) for n in "ab"]
    for u in ups:
        u.start()
    yield ups  # type: ignore[misc]
    for u in ups:
        u.stop()


async def test_token_is_sent_and_never_printed(two: list[Upstream], tmp_path) -> None:  # type: ignore[no-untyped-def]
    token_file = tmp_path / "token"
    token_file.write_text("tok-123-secret\n")
    with FakeConsul(acl_tokens={"tok-123-secret": "read"}, default_acl_policy="deny") as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        config = meshlib.MeshConfig.from_env(
            {
                "CONSUL_HTTP_ADDR": c.http_addr,
                "CONSUL_HTTP_TOKEN_FILE": str(token_file),
                "CONSUL_HTTP_TOKEN": "wrong",
            }
        )
        async with meshlib.AsyncMeshClient(config=config) as client:
            assert (await client.get("http://users/")).status_code == 200
            text = json.dumps(client.mesh_state()) + repr(config) + str(config.consul.describe())
        assert "tok-123-secret" not in text
        deny = meshlib.ConsulDiscovery(
            _settings(c, token="wrong"), meshlib.ConsulOptions(first_timeout=1)
        )
        with pytest.raises(meshlib.DiscoveryError, match="403"):
            await deny.resolve(Target("users"))
        deny.close()


async def _tls_front(target_port: int, ctx) -> tuple[asyncio.Server, int]:  # type: ignore[no-untyped-def]
    """A TLS-terminating forwarder on 127.0.0.1 in front of FakeConsul (plain HTTP)."""

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


async def test_tls_to_consul_with_a_test_ca(two: list[Upstream], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("consul.internal").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeConsul() as c:
        c.register_service("users", service_id="u0", address="127.0.0.1", port=two[0].port)
        server, port = await _tls_front(c.port, server_ctx)
        try:
            config = meshlib.MeshConfig.from_env(
                {
                    "CONSUL_HTTP_ADDR": f"https://127.0.0.1:{port}",
                    "CONSUL_CACERT": str(ca_file),
                    "CONSUL_TLS_SERVER_NAME": "consul.internal",
                }
            )
            d = meshlib.ConsulDiscovery(config.consul, meshlib.ConsulOptions(first_timeout=3))
            res = await d.resolve(Target("users"))
            assert res is not None
            assert [e.port for e in res.endpoints] == [two[0].port]
            d.close()
            untrusted = meshlib.ConsulDiscovery(
                meshlib.ConsulSettings(scheme="https", host="127.0.0.1", port=port),
                meshlib.ConsulOptions(first_timeout=3),
            )
            with pytest.raises(meshlib.DiscoveryError, match="ConnectError"):
                await untrusted.resolve(Target("users"))
            untrusted.close()
        finally:
            server.close()


async def test_more_watched_services_than_a_default_connection_pool() -> None:
    with FakeConsul() as c:
        for i in range(110):
            c.register_service(f"s{i}", service_id=f"s{i}", address="127.0.0.1", port=10000 + i)
        # closing(): 110 watches left running after a failure would keep calling httpx in
        # later tests (and show up in their traces).
        with closing(
            meshlib.ConsulDiscovery(_settings(c), meshlib.ConsulOptions(wait=30.0, max_watches=200))
        ) as d:
            results = await asyncio.gather(*(d.resolve(Target(f"s{i}")) for i in range(110)))
            assert all(r is not None and len(r.endpoints) == 1 for r in results)
            c.register_service("s109", service_id="s109-b", address="127.0.0.1", port=20000)
            await _until(lambda: len(d.lookup(Target("s109")).endpoints) == 2)  # type: ignore[union-attr]
