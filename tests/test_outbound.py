"""Per-call policy: @outbound on sync and async functions, and per-request extensions."""

import threading

import httpx
import pytest

import meshlib
from meshlib.clock import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


def _disc(*ports: int) -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": [f"127.0.0.1:{p}" for p in ports]})


async def test_outbound_timeout_caps_every_call_inside() -> None:
    async with Upstream(UpstreamBehaviour(name="slow", latency=0.5)) as slow:
        async with meshlib.AsyncMeshClient(discovery=_disc(slow.port)) as client:

            @meshlib.outbound(timeout=0.1)
            async def get_user() -> httpx.Response:
                return await client.get("http://users/")

            with pytest.raises(meshlib.DeadlineExceeded):
                await get_user()


async def test_outbound_propagates_the_remaining_deadline() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        async with meshlib.AsyncMeshClient(discovery=_disc(up.port)) as client:

            @meshlib.outbound(timeout=0.8)
            async def call() -> dict[str, object]:
                return (await client.get("http://users/echo")).json()  # type: ignore[no-any-return]

            echo = await call()
            plain = (await client.get("http://users/echo")).json()
    sent = int(echo["headers"][meshlib.DEADLINE_HEADER])  # type: ignore[index]
    assert 500 < sent <= 800
    assert meshlib.DEADLINE_HEADER not in plain["headers"]


async def test_outbound_retries_and_idempotent_for_post() -> None:
    behaviour = UpstreamBehaviour(name="bad", fail_fraction=1.0)
    async with Upstream(behaviour) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=_disc(bad.port), clock=ManualClock()
        ) as client:

            @meshlib.outbound(retries=3, idempotent=True)
            async def create() -> httpx.Response:
                return await client.post("http://users/", content=b"x")

            assert (await create()).status_code == 503
            assert bad.stats().total == 4
            await client.post("http://users/", content=b"x")
            assert bad.stats().total == 5  # undecorated POST: no retry


async def test_per_request_extension_turns_retries_off() -> None:
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=_disc(bad.port), clock=ManualClock()
        ) as client:
            await client.get("http://users/", extensions={"mesh": {"retries": 0}})
            assert bad.stats().total == 1
            await client.get("http://users/")
            assert bad.stats().total == 4
            with pytest.raises(ValueError, match="unknown mesh option"):
                await client.get("http://users/", extensions={"mesh": {"retry": 1}})


async def test_idempotency_key_makes_post_retries_safe() -> None:
    async with Upstream(UpstreamBehaviour(name="bad", fail_fraction=1.0)) as bad:
        async with meshlib.AsyncMeshClient(
            discovery=_disc(bad.port), clock=ManualClock()
        ) as client:

            @meshlib.outbound(idempotency_key=True)
            async def pay() -> httpx.Response:
                return await client.post("http://users/", content=b"pay")

            await pay()
        headers = [dict(h) for h in bad.stats().recent_headers]
    keys = {h["idempotency-key"] for h in headers}
    assert len(headers) == 3
    assert len(keys) == 1


def test_outbound_on_a_sync_function_with_the_sync_client() -> None:
    with UpstreamThread(UpstreamBehaviour(name="slow", latency=0.5)) as slow:
        with meshlib.MeshClient(discovery=_disc(slow.port)) as client:

            @meshlib.outbound(timeout=0.1)
            def get_user() -> httpx.Response:
                return client.get("http://users/")

            with pytest.raises(meshlib.DeadlineExceeded):
                get_user()


def test_outbound_policy_does_not_leak_between_threads() -> None:
    seen: list[str | None] = []

    @meshlib.outbound(timeout=5.0)
    def inner() -> None:
        other = threading.Thread(
            target=lambda: seen.append(repr(meshlib.scope.context.current_deadline()))
        )
        other.start()
        other.join()

    inner()
    assert seen == ["None"]


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="timeout"):
        meshlib.outbound(timeout=-1)
    with pytest.raises(ValueError, match="retries"):
        meshlib.outbound(retries=42)
