"""Mocking the URL the code calls: respx and pytest-httpx see ``http://users/...`` by default.

Both libraries' docs mock the URL the code under test calls; in a mesh that is the logical URL.
``MESH_MOCK_URL=endpoint`` (``MeshConfig(mock_url="endpoint")``) shows the mocks the endpoint's
address instead. A request no mock answers is a mistake in the test: it is raised at once, never
retried, and what the libraries recorded is what they were asked.
"""

import httpx
import pytest
import respx
from pytest_httpx import HTTPXMock

import meshlib


def _discovery() -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": ["127.0.0.1:8001", "127.0.0.1:8002"]})


async def test_respx_matches_the_logical_url() -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.get("http://users/v1/users/42").respond(200, json={"id": 42})
        async with meshlib.AsyncMeshClient(discovery=_discovery()) as client:
            r = await client.get("http://users/v1/users/42")
    assert r.json() == {"id": 42}
    assert route.call_count == 1
    assert route.calls.last.request.url == "http://users/v1/users/42"
    assert route.calls.last.request.headers["host"] == "users"


def test_respx_logical_url_with_the_sync_client() -> None:
    with respx.mock(assert_all_called=True) as router:
        router.get("http://users/ping").respond(204)
        with meshlib.MeshClient(discovery=_discovery()) as client:
            assert client.get("http://users/ping").status_code == 204


async def test_pytest_httpx_matches_the_logical_url(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://users/v1/users/7", json={"id": 7})
    async with meshlib.AsyncMeshClient(discovery=_discovery()) as client:
        r = await client.get("http://users/v1/users/7")
    assert r.json() == {"id": 7}
    assert len(httpx_mock.get_requests(url="http://users/v1/users/7")) == 1
    assert httpx_mock.get_requests(url="http://127.0.0.1:8001/v1/users/7") == []


def test_pytest_httpx_retries_are_recorded_as_sent(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url="http://users/x", status_code=503)
    httpx_mock.add_response(url="http://users/x", json={"ok": True})
    with meshlib.MeshClient(discovery=_discovery()) as client:
        r = client.get("http://users/x")
    assert r.json() == {"ok": True}
    sent = httpx_mock.get_requests(url="http://users/x")
    assert len(sent) == 2  # one per attempt, each as it was matched
    assert [str(q.url) for q in sent] == ["http://users/x", "http://users/x"]


@pytest.mark.httpx_mock(assert_all_requests_were_expected=False)
async def test_pytest_httpx_missing_mock_is_not_retried(httpx_mock: HTTPXMock) -> None:
    async with meshlib.AsyncMeshClient(discovery=_discovery()) as client:
        with pytest.raises(httpx.TimeoutException, match="No response can be found"):
            await client.get("http://users/v1/missing")
        state = client.mesh_state()["services"]["users"]
    assert len(httpx_mock.get_requests()) == 1
    assert sum(e["failures"] for e in state["endpoints"]) == 0  # not the endpoint's fault


def test_respx_missing_mock_is_not_retried() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get("http://users/other").respond(200)
        with meshlib.MeshClient(discovery=_discovery()) as client:
            with pytest.raises(respx.models.AllMockedAssertionError):
                client.get("http://users/missing")
            state = client.mesh_state()["services"]["users"]
    assert sum(e["requests"] for e in state["endpoints"]) <= 1


async def test_endpoint_switch_shows_mocks_the_endpoint_address(httpx_mock: HTTPXMock) -> None:
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"]})
    config = meshlib.MeshConfig(mock_url="endpoint")
    httpx_mock.add_response(url="http://127.0.0.1:8001/v1/users/7", json={"id": 7})
    async with meshlib.AsyncMeshClient(discovery=discovery, config=config) as client:
        r = await client.get("http://users/v1/users/7")
    assert r.json() == {"id": 7}
    assert r.request.url == "http://users/v1/users/7"  # the caller still sees the logical URL
    (request,) = httpx_mock.get_requests(url="http://127.0.0.1:8001/v1/users/7")
    assert request.headers["host"] == "users"


def test_mock_url_is_read_from_the_environment() -> None:
    assert meshlib.MeshConfig.from_env({}).mock_url == "logical"
    assert meshlib.MeshConfig.from_env({"MESH_MOCK_URL": "Endpoint"}).mock_url == "endpoint"
    with pytest.raises(meshlib.ConfigError, match="MESH_MOCK_URL"):
        meshlib.MeshConfig.from_env({"MESH_MOCK_URL": "both"})
