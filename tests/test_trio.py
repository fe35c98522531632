"""Under trio, ``AsyncMeshClient`` fails at the first request with a clear error, never a hang.

httpx's ``AsyncClient`` runs under trio; meshlib's async client is built on asyncio (its engine,
limits and backoff sleeps), which is what its users' frameworks run on. The choice, and the way
to call mesh services from trio (the sync client in a worker thread), are in docs/migrating.md.
"""

from __future__ import annotations

import pytest

import meshlib
from meshlib.upstream import UpstreamBehaviour, UpstreamThread

trio = pytest.importorskip("trio")


@pytest.mark.parametrize("engine", ["fast", "httpx"])
def test_async_client_under_trio_says_it_needs_asyncio(engine: str) -> None:
    async def main() -> BaseException:
        discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:9"]})
        config = meshlib.MeshConfig(engine=engine)
        async with meshlib.AsyncMeshClient(discovery=discovery, config=config) as client:
            with pytest.raises(meshlib.ConfigError) as caught:
                await client.get("http://users/v1/users/42")
        return caught.value

    err = trio.run(main)
    assert "asyncio" in str(err)
    assert "'users'" in str(err)
    assert "MeshClient" in str(err)  # the way out is named
    assert not getattr(err, "__notes__", None)  # not retried: one attempt, no attempt list


def test_sync_client_from_a_trio_worker_thread() -> None:
    with UpstreamThread(UpstreamBehaviour(name="u")) as up:
        discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{up.port}"]})
        with meshlib.MeshClient(discovery=discovery, timeout=5.0) as client:

            async def main() -> int:
                response = await trio.to_thread.run_sync(client.get, "http://users/")
                return response.status_code

            assert trio.run(main) == 200
