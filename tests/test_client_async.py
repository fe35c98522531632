"""End to end: AsyncMeshClient against real upstreams on 127.0.0.1."""

import json
from collections import Counter

import httpx
import pytest

import meshlib
from meshlib.upstream import Upstream, UpstreamBehaviour

HTTPX_DEFAULT_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent"}


def _discovery(servers: list[Upstream]) -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"users": [f"127.0.0.1:{s.port}" for s in servers]})


async def test_mesh_name_reaches_an_endpoint_with_the_service_as_host(
    upstreams: list[Upstream],
) -> None:
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams)) as client:
        r = await client.get("http://users/echo?x=1")
    assert r.status_code == 200
    echo = r.json()
    assert echo["headers"]["host"] == "users"
    assert echo["path"] == "/echo"
    assert r.headers["x-upstream"] in {"a", "b", "c"}
    # The caller sees the logical URL, not the endpoint's address.
    assert r.request.url == httpx.URL("http://users/echo?x=1")


async def test_traffic_spreads_over_all_endpoints(upstreams: list[Upstream]) -> None:
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams)) as client:
        seen = Counter(
            [(await client.get("http://users/")).headers["x-upstream"] for _ in range(90)]
        )
    assert set(seen) == {"a", "b", "c"}


async def test_post_body_and_httpx_keywords_still_work(upstreams: list[Upstream]) -> None:
    hooks: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        hooks.append(str(request.url))

    async with meshlib.AsyncMeshClient(
        discovery=_discovery(upstreams),
        base_url="http://users",
        headers={"x-team": "core"},
        auth=("svc", "pw"),
        timeout=2.0,
        event_hooks={"request": [on_request]},
    ) as client:
        r = await client.post("/echo", content=b"x" * 1000)
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["body_length"] == 1000
    assert echo["headers"]["x-team"] == "core"
    assert echo["headers"]["authorization"].startswith("Basic ")
    assert hooks == ["http://users/echo"]


async def test_unknown_service_fails_fast_saying_where_it_looked(upstreams: list[Upstream]) -> None:
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams)) as client:
        with pytest.raises(meshlib.NoEndpointsAvailable) as info:
            await client.get("http://orders/")
    assert isinstance(info.value, httpx.ConnectError)
    assert "orders" in str(info.value)
    assert "static discovery" in str(info.value)
    assert "MESH_PASSTHROUGH_HOSTS" in str(info.value)


async def test_pass_through_host_gets_no_mesh_behaviour_or_headers(
    upstreams: list[Upstream],
) -> None:
    direct = upstreams[0]
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams[1:])) as client:
        r = await client.get(f"http://127.0.0.1:{direct.port}/echo")
        mesh = await client.get("http://users/echo")
    assert r.headers["x-upstream"] == "a"
    assert set(r.json()["headers"]) == HTTPX_DEFAULT_HEADERS
    assert mesh.headers["x-upstream"] in {"b", "c"}


async def test_passthrough_hosts_setting_keeps_a_single_label_name_out(
    upstreams: list[Upstream],
) -> None:
    config = meshlib.MeshConfig(passthrough_hosts=("users",))
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams), config=config) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get("http://users/", timeout=2.0)
    assert not isinstance(info.value, meshlib.NoEndpointsAvailable)


async def test_load_is_tracked_until_the_stream_closes(upstreams: list[Upstream]) -> None:
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams[:1])) as client:
        await client.get("http://users/")
        (service,) = list(client.mesh.router.services())
        (state,) = service.eps.states
        async with client.stream("GET", "http://users/echo") as r:
            assert r.status_code == 200
            assert state.metric.pending == 1
            await r.aread()
        assert state.metric.pending == 0


async def test_slow_endpoint_gets_little_traffic(upstreams: list[Upstream]) -> None:
    slow = Upstream(UpstreamBehaviour(name="slow", latency=0.040))
    await slow.start()
    try:
        servers = [*upstreams[:2], slow]
        async with meshlib.AsyncMeshClient(discovery=_discovery(servers)) as client:
            seen = Counter(
                [(await client.get("http://users/")).headers["x-upstream"] for _ in range(150)]
            )
    finally:
        await slow.stop()
    assert seen["slow"] <= 10


async def test_round_robin_is_selectable(upstreams: list[Upstream]) -> None:
    config = meshlib.MeshConfig(balancer="round-robin")
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams), config=config) as client:
        seen = Counter(
            [(await client.get("http://users/")).headers["x-upstream"] for _ in range(30)]
        )
    assert seen == {"a": 10, "b": 10, "c": 10}


async def test_env_proxy_never_captures_a_mesh_host(
    upstreams: list[Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams)) as client:
        r = await client.get("http://users/")
    assert r.status_code == 200


async def test_mock_transport_under_the_mesh_sees_the_endpoint_url() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["host"]))
        return httpx.Response(200, json={"ok": True})

    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"]})
    async with meshlib.AsyncMeshClient(
        discovery=discovery, transport=httpx.MockTransport(handler)
    ) as client:
        r = await client.get("http://users/v1/users/42")
    assert json.loads(r.content) == {"ok": True}
    assert seen == [("http://127.0.0.1:8001/v1/users/42", "users")]


async def test_transport_mounts_into_a_plain_httpx_client(upstreams: list[Upstream]) -> None:
    transport = meshlib.AsyncMeshTransport(
        discovery=_discovery(upstreams), config=meshlib.MeshConfig()
    )
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.get("http://users.service.consul/")
    assert r.headers["x-upstream"] in {"a", "b", "c"}


async def test_httpx_engine_is_selectable(upstreams: list[Upstream]) -> None:
    config = meshlib.MeshConfig(engine="httpx")
    async with meshlib.AsyncMeshClient(discovery=_discovery(upstreams), config=config) as client:
        assert isinstance(client.mesh._inner, httpx.AsyncHTTPTransport)
        r = await client.get("http://users/")
    assert r.status_code == 200


async def test_cookies_and_base_url_still_behave_like_httpx() -> None:
    seen: list[tuple[httpx.URL, dict[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url, dict(request.headers)))
        if request.url.path == "/login":
            return httpx.Response(200, headers={"set-cookie": "session=abc; Path=/"})
        return httpx.Response(200)

    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"], "orders": ["127.0.0.1:8002"]})
    async with meshlib.AsyncMeshClient(
        discovery=discovery, transport=httpx.MockTransport(handler), base_url="http://users"
    ) as client:
        await client.get("/login")
        await client.get("/me")
        assert seen[-1][1]["cookie"] == "session=abc"
        assert client.cookies["session"] == "abc"
        client.base_url = httpx.URL("http://orders")
        await client.get("/me")
        assert seen[-1][0].port == 8002
        client.cookies = {"other": "1"}
        await client.get("/me")
        assert seen[-1][1]["cookie"] == "other=1"
