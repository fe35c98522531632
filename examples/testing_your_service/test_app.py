"""Testing app.py with ``meshlib.testing``: real sockets, a fake Consul, injected faults, no sleeps.

Run from the repository root: ``python -m pytest examples/testing_your_service -q``.

* ``fake_consul_env`` (a pytest fixture installed with meshlib) starts a ``FakeConsul`` and sets
  ``CONSUL_HTTP_ADDR`` to it, so the app's own ``AsyncMeshClient()`` discovers through it;
* ``Upstream`` is a real HTTP server standing in for the ``users`` service, registered in the
  fake Consul like a deployed instance;
* ``FaultProxy`` sits in front of one instance and resets its connections mid-response;
* ``ManualClock`` makes the retry backoff (here a server's ``Retry-After``) take no real time.

The app is driven in-process through ``httpx.ASGITransport``, with its lifespan run by hand so
its mesh client is opened and closed as in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from app import create_app
from fastapi import FastAPI

import meshlib
from meshlib.testing import (
    FakeConsul,
    FaultProxy,
    ManualClock,
    Upstream,
    UpstreamBehaviour,
    reset_after_bytes,
)

ADA = json.dumps({"id": 42, "name": "Ada", "bio": "x" * 2000}).encode()


async def get(app: FastAPI, path: str) -> httpx.Response:
    """One request to the app, with its lifespan (startup and shutdown) around it."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        return await http.get(path)


def register(consul: FakeConsul, service_id: str, port: int) -> None:
    """Announce a ``users`` instance, as its own registrar would in production."""
    consul.register_service("users", service_id=service_id, address="127.0.0.1", port=port)


@pytest.fixture
async def users() -> AsyncIterator[Upstream]:
    """A healthy ``users`` instance; every path answers Ada's record."""
    async with Upstream(UpstreamBehaviour(name="users-1", body=ADA)) as upstream:
        yield upstream


async def test_greets_a_user_found_through_consul(
    fake_consul_env: FakeConsul, users: Upstream
) -> None:
    register(fake_consul_env, "users-1", users.port)

    r = await get(create_app(), "/greeting/42")

    assert r.status_code == 200
    assert r.json() == {"greeting": "Hello, Ada!"}
    assert users.stats().total == 1


async def test_a_reset_mid_response_is_retried_on_another_instance(
    fake_consul_env: FakeConsul, users: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round robin makes sure the faulty instance gets its turn (P2C might avoid it).
    monkeypatch.setenv("MESH_BALANCER", "round-robin")
    async with (
        Upstream(UpstreamBehaviour(name="users-2", body=ADA)) as second,
        FaultProxy(("127.0.0.1", second.port)) as proxy,
    ):
        proxy.add(reset_after_bytes(500))  # headers arrive, then the body is cut by a reset
        register(fake_consul_env, "users-1", users.port)
        register(fake_consul_env, "users-2", proxy.port)
        app = create_app()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://app"
            ) as http,
        ):
            responses = [await http.get("/greeting/42") for _ in range(4)]

    assert [r.status_code for r in responses] == [200] * 4
    assert second.stats().total >= 1  # the faulty instance was tried and reset...
    assert users.stats().total == 4  # ...and every call was answered by the healthy one


async def test_retry_after_is_honoured_without_sleeping(fake_consul_env: FakeConsul) -> None:
    busy = UpstreamBehaviour(name="users-1", fail_fraction=1.0, fail_status=503, retry_after="2")
    clock = ManualClock()
    async with Upstream(busy) as users:
        register(fake_consul_env, "users-1", users.port)
        # Injected client: configured from the same environment, but on the manual clock.
        client = meshlib.AsyncMeshClient(clock=clock, timeout=2.0)
        started = time.monotonic()
        async with client:
            r = await get(create_app(client), "/greeting/42")
        elapsed = time.monotonic() - started

    assert r.status_code == 503
    assert r.json() == {"detail": "users answered 503"}
    assert users.stats().total == 3  # meshlib's default: 3 attempts
    assert clock.slept.count(2.0) == 2  # waited Retry-After twice, on the manual clock...
    assert elapsed < 1.0  # ...so the test did not wait 4 s


async def test_unknown_user_is_a_404_and_not_retried(fake_consul_env: FakeConsul) -> None:
    missing = UpstreamBehaviour(name="users-1", fail_fraction=1.0, fail_status=404)
    async with Upstream(missing) as users:
        register(fake_consul_env, "users-1", users.port)
        r = await get(create_app(), "/greeting/7")

    assert r.status_code == 404
    assert users.stats().total == 1
