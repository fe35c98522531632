"""respx and pytest-httpx patch below the mesh; users keep mocking with them.

These show the endpoint form (``MESH_MOCK_URL=endpoint``); test_mock_logical_url.py the default.
"""

import httpx
import pytest
import respx
from pytest_httpx import HTTPXMock

import meshlib

ENDPOINT = meshlib.MeshConfig(mock_url="endpoint")


@pytest.fixture
def discovery() -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"]})


async def test_respx_sees_mesh_attempts(discovery: meshlib.StaticDiscovery) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.get("http://127.0.0.1:8001/v1/users/42").respond(200, json={"id": 42})
        async with meshlib.AsyncMeshClient(discovery=discovery, config=ENDPOINT) as client:
            r = await client.get("http://users/v1/users/42")
    assert r.json() == {"id": 42}
    assert route.calls.last.request.headers["host"] == "users"


def test_respx_with_the_sync_client(discovery: meshlib.StaticDiscovery) -> None:
    with respx.mock() as router:
        router.get("http://127.0.0.1:8001/ping").respond(204)
        with meshlib.MeshClient(discovery=discovery, config=ENDPOINT) as client:
            assert client.get("http://users/ping").status_code == 204


async def test_pytest_httpx_sees_mesh_attempts(
    httpx_mock: HTTPXMock, discovery: meshlib.StaticDiscovery
) -> None:
    httpx_mock.add_response(url="http://127.0.0.1:8001/v1/users/7", json={"id": 7})
    async with meshlib.AsyncMeshClient(discovery=discovery, config=ENDPOINT) as client:
        r = await client.get("http://users/v1/users/7")
    assert r.json() == {"id": 7}
    (request,) = httpx_mock.get_requests()
    assert request.headers["host"] == "users"


def test_fast_engine_is_used_again_when_mocks_stop(discovery: meshlib.StaticDiscovery) -> None:
    from meshlib.pipeline.mocking import mocking_active

    assert not mocking_active(sync=True)
    assert not mocking_active(sync=False)
    with respx.mock():
        assert mocking_active(sync=True)
        assert mocking_active(sync=False)
    assert not mocking_active(sync=False)
    assert isinstance(httpx.AsyncHTTPTransport.handle_async_request, object)
