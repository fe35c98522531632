"""The admin endpoint: JSON state, Prometheus text, the page, and its security rules."""

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest

import meshlib
from meshlib.admin import (
    AdminServer,
    merged_state,
    parse_admin_addr,
    serve_admin_from_config,
    start_admin,
    start_admin_from_config,
)
from meshlib.admin.metrics import render_prometheus
from meshlib.testing import ManualClock
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread

TOKEN = "s3cret-admin-token"

# One sample line of the text format: name, optional {labels}, value.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict little parser for format 0.0.4: fails on anything malformed."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}
            assert name not in typed, f"family {name} declared twice"
            typed[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        assert name in helped, f"{name} has no HELP line before it"
        labels: list[tuple[str, str]] = []
        rest = labels_text or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            labels.append((lm.group(1), _unescape(lm.group(2))))
            rest = rest[lm.end() :]
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
async def admin_client(
    upstreams: list[Upstream],
) -> AsyncIterator[tuple[meshlib.AsyncMeshClient, ManualClock]]:
    clock = ManualClock()
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{s.port}" for s in upstreams]})
    async with meshlib.AsyncMeshClient(discovery=discovery, clock=clock) as client:
        yield client, clock


async def test_state_is_exactly_mesh_state(
    admin_client: tuple[meshlib.AsyncMeshClient, ManualClock],
) -> None:
    client, _ = admin_client
    for _ in range(30):
        await client.get("http://users/")
    async with await start_admin(client, addr="127.0.0.1:0") as admin:
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(f"{admin.url}/mesh/state")
            metrics = parse_prometheus((await http.get(f"{admin.url}/mesh/metrics")).text)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == client.mesh_state()
    assert set(r.json()["services"]) == {"users"}
    for ep in r.json()["services"]["users"]["endpoints"]:
        labels = {"service": "users", "endpoint": ep["address"]}
        assert metrics[_key("meshlib_endpoint_ewma_seconds", **labels)] == pytest.approx(
            ep["ewma_ms"] / 1000
        )


async def test_metrics_parse_and_carry_the_traffic(upstreams: list[Upstream]) -> None:
    clock = ManualClock()
    upstreams[1].set_behaviour(UpstreamBehaviour(name="b", fail_fraction=1.0, fail_status=500))
    discovery = meshlib.StaticDiscovery({"users": [f"127.0.0.1:{s.port}" for s in upstreams]})
    # Round robin keeps sending to the failing endpoint until failure accrual ejects it.
    config = meshlib.MeshConfig(balancer="round-robin")
    async with meshlib.AsyncMeshClient(discovery=discovery, clock=clock, config=config) as client:
        for _ in range(60):
            await client.get("http://users/")
        state = client.mesh_state()["services"]["users"]
        async with await start_admin(client, addr=":0") as admin:
            async with httpx.AsyncClient(trust_env=False) as http:
                r = await http.get(f"{admin.url}/mesh/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_prometheus(r.text)
    by_port = {s.port: s for s in upstreams}
    for ep in state["endpoints"]:
        addr = ep["address"]
        served = by_port[int(addr.rsplit(":", 1)[1])].stats().total
        labels = {"service": "users", "endpoint": addr}
        # The counters agree with what the upstream servers themselves saw.
        assert m[_key("meshlib_endpoint_requests_total", **labels)] == served
        assert m[_key("meshlib_endpoint_in_flight", **labels)] == 0
        assert _key("meshlib_endpoint_ewma_seconds", **labels) not in m  # no EWMA in round robin
        assert m[_key("meshlib_endpoint_latency_seconds", **labels, quantile="0.99")] == (
            pytest.approx(ep["p99_ms"] / 1000)
        )
        assert m[_key("meshlib_endpoint_latency_seconds", **labels, quantile="0.5")] > 0
        for st in ("alive", "dead", "probing"):
            want = 1.0 if ep["state"] == st else 0.0
            assert m[_key("meshlib_endpoint_state", **labels, state=st)] == want
        assert m[_key("meshlib_endpoint_next_probe_seconds", **labels)] == ep["next_probe_in_s"]
    failing = f"127.0.0.1:{upstreams[1].port}"
    bad = {"service": "users", "endpoint": failing}
    assert m[_key("meshlib_endpoint_failures_total", **bad)] == upstreams[1].stats().total >= 5
    assert m[_key("meshlib_endpoint_state", **bad, state="dead")] == 1.0
    assert m[_key("meshlib_endpoint_next_probe_seconds", **bad)] > 0
    assert m[_key("meshlib_retry_budget_balance", service="users")] == state["budget"]["balance"]
    assert m[_key("meshlib_retry_budget_exhausted_total", service="users")] == 0
    assert m[_key("meshlib_discovery_staleness_seconds", service="users")] == 0
    assert m[_key("meshlib_service_panic", service="users")] == 0
    assert m[_key("meshlib_service_dead_endpoints", service="users")] == 1


def test_label_values_are_escaped_and_missing_values_left_out() -> None:
    name = 'we"ird\\svc\nx'
    state = {
        "services": {
            name: {
                "stale": True,
                "staleness_s": 12.5,
                "panic": True,
                "dead": 1,
                "endpoints": [
                    {
                        "address": "10.0.0.1:80",
                        "requests": 3,
                        "failures": 3,
                        "in_flight": 0,
                        "p50_ms": None,
                        "p99_ms": None,
                        "state": "probing",
                    },
                ],
            }
        }
    }
    text = render_prometheus(state)
    assert 'service="we\\"ird\\\\svc\\nx"' in text
    m = parse_prometheus(text)
    labels = {"service": name, "endpoint": "10.0.0.1:80"}
    assert m[_key("meshlib_endpoint_state", **labels, state="probing")] == 1.0
    assert m[_key("meshlib_discovery_staleness_seconds", service=name)] == 12.5
    assert m[_key("meshlib_discovery_stale", service=name)] == 1.0
    assert "meshlib_endpoint_latency_seconds" not in text  # no sample yet: nothing made up
    assert "meshlib_retry_budget_balance" not in text
    assert render_prometheus({"services": {}}) == ""


async def test_token_is_required_and_never_echoed(
    admin_client: tuple[meshlib.AsyncMeshClient, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = admin_client
    await client.get("http://users/")
    caplog.set_level(logging.DEBUG)
    async with await start_admin(client, addr=":0", token=TOKEN) as admin:
        async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as http:
            missing = await http.get("/mesh/state")
            wrong = await http.get("/mesh/state", headers={"Authorization": "Bearer nope"})
            page = await http.get("/")
            basic_wrong = await http.get("/", auth=("admin", "nope"))
            ok = await http.get("/mesh/state", headers={"Authorization": f"Bearer {TOKEN}"})
            metrics = await http.get("/mesh/metrics", headers={"authorization": f"bearer {TOKEN}"})
            basic = await http.get("/", auth=("anyone", TOKEN))
            evil_host = await http.get(
                "/mesh/state", headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.test"}
            )
    for r in (missing, wrong, page, basic_wrong):
        assert r.status_code == 401
        assert TOKEN not in r.text
        assert TOKEN not in str(r.headers)
        assert "Bearer" in r.headers.get_list("www-authenticate")[0]
    assert ok.status_code == 200
    assert ok.json() == client.mesh_state()
    assert metrics.status_code == 200
    assert basic.status_code == 200
    assert "<canvas" in basic.text or "canvas" in basic.text
    # With a token the Host rule is not needed: a rebinding page cannot know the token.
    assert evil_host.status_code == 200
    assert TOKEN not in caplog.text
    assert any("token required: True" in r.getMessage() for r in caplog.records)


async def test_without_a_token_only_loopback_host_names_are_answered(
    admin_client: tuple[meshlib.AsyncMeshClient, ManualClock],
) -> None:
    client, _ = admin_client
    async with await start_admin(client, addr=":0") as admin:
        async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as http:
            rebinding = await http.get("/mesh/state", headers={"Host": f"evil.test:{admin.port}"})
            local = await http.get("/mesh/state", headers={"Host": f"localhost:{admin.port}"})
            v6 = await http.get("/mesh/state", headers={"Host": f"[::1]:{admin.port}"})
    assert rebinding.status_code == 421
    assert local.status_code == 200
    assert v6.status_code == 200


def test_non_loopback_address_is_refused_without_a_token() -> None:
    for addr in ("0.0.0.0:9990", "192.0.2.10:9990", "[::]:9990", "admin.internal:9990"):
        with pytest.raises(meshlib.ConfigError) as info:
            parse_admin_addr(addr)
        message = str(info.value)
        assert "MESH_ADMIN_ADDR" in message
        assert "loopback" in message
        assert "MESH_ADMIN_TOKEN" in message
    # Allowed with a token (parsed only: nothing binds a non-loopback address here).
    assert parse_admin_addr("0.0.0.0:9990", TOKEN) == ("0.0.0.0", 9990)
    with pytest.raises(meshlib.ConfigError, match="MESH_ADMIN_ADDR"):
        AdminServer([_Static({})], addr="0.0.0.0:0")
    with pytest.raises(meshlib.ConfigError) as info:
        parse_admin_addr("0.0.0.0:9990", "")
    assert TOKEN not in str(info.value)


def test_address_forms() -> None:
    assert parse_admin_addr(":9990") == ("127.0.0.1", 9990)
    assert parse_admin_addr("9990") == ("127.0.0.1", 9990)
    assert parse_admin_addr("localhost:9990") == ("127.0.0.1", 9990)
    assert parse_admin_addr("[::1]:9990") == ("::1", 9990)
    assert parse_admin_addr("127.0.0.2:0") == ("127.0.0.2", 0)
    for bad in ("127.0.0.1:http", "127.0.0.1:70000", "::1:9990", ""):
        with pytest.raises(meshlib.ConfigError, match="MESH_ADMIN_ADDR"):
            parse_admin_addr(bad)


async def test_routes_methods_and_malformed_requests(
    admin_client: tuple[meshlib.AsyncMeshClient, ManualClock],
) -> None:
    client, _ = admin_client
    async with await start_admin(client, addr=":0") as admin:
        async with httpx.AsyncClient(base_url=admin.url, trust_env=False) as http:
            missing = await http.get("/nope")
            post = await http.post("/mesh/state", content=b"{}")
            head = await http.head("/mesh/metrics")
            query = await http.get("/mesh/state?pretty=1")
            page = await http.get("/")
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
        writer.write(b"NONSENSE\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    assert missing.status_code == 404
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) >= 0
    assert query.status_code == 200
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    # Everything inline: the page must work on a machine without internet access.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)


class _Static:
    """A stand-in client: anything with mesh_state() can be shown."""

    def __init__(self, services: dict[str, object]) -> None:
        self.services = services

    def mesh_state(self) -> dict[str, object]:
        return {"services": self.services}


def test_several_clients_are_merged_without_hiding_one() -> None:
    a = _Static({"users": {"endpoints": [1]}, "orders": {"endpoints": []}})
    b = _Static({"users": {"endpoints": [2]}})
    merged = merged_state([a, b])
    assert merged == {
        "services": {
            "users": {"endpoints": [1]},
            "orders": {"endpoints": []},
            "users#2": {"endpoints": [2]},
        },
        "traffic": {},  # each client's discovery chains, merged by service name alike
    }
    assert merged_state(a) == a.mesh_state()
    with pytest.raises(ValueError, match="at least one"):
        merged_state([])


def test_admin_server_thread_serves_a_sync_client(
    upstream_threads: list[UpstreamThread],
) -> None:
    discovery = meshlib.StaticDiscovery(
        {"orders": [f"127.0.0.1:{s.port}" for s in upstream_threads]}
    )
    with meshlib.MeshClient(discovery=discovery) as client:
        for _ in range(10):
            client.get("http://orders/")
        with AdminServer([client, _Static({"extra": {"endpoints": []}})], addr=":0") as admin:
            assert admin.port > 0
            r = httpx.get(f"{admin.url}/mesh/state", trust_env=False)
            m = httpx.get(f"{admin.url}/mesh/metrics", trust_env=False)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{admin.url}/mesh/state", trust_env=False, timeout=2)
    assert r.status_code == 200
    assert set(r.json()["services"]) == {"orders", "extra"}
    total = sum(e["requests"] for e in r.json()["services"]["orders"]["endpoints"])
    assert total == 10
    assert "meshlib_endpoint_requests_total" in m.text


def test_admin_server_reports_a_port_in_use() -> None:
    with AdminServer(_Static({}), addr=":0") as first:
        with pytest.raises(OSError, match="in use"):
            AdminServer(_Static({}), addr=f"127.0.0.1:{first.port}").start()


def test_config_reads_admin_variables_and_hides_the_token() -> None:
    config = meshlib.MeshConfig.from_env(
        {"MESH_ADMIN_ADDR": " 127.0.0.1:9991 ", "MESH_ADMIN_TOKEN": TOKEN}
    )
    assert config.admin_addr == "127.0.0.1:9991"
    assert config.admin_token == TOKEN
    assert TOKEN not in repr(config)
    empty = meshlib.MeshConfig.from_env({"MESH_ADMIN_ADDR": "", "MESH_ADMIN_TOKEN": " "})
    assert empty.admin_addr is None
    assert empty.admin_token is None


async def test_start_admin_from_config_starts_only_when_configured() -> None:
    source = _Static({"users": {"endpoints": []}})
    assert await start_admin_from_config(source, meshlib.MeshConfig()) is None
    config = meshlib.MeshConfig(admin_addr="127.0.0.1:0", admin_token=TOKEN)
    handle = await start_admin_from_config(source, config)
    assert handle is not None
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(
                f"{handle.url}/mesh/state", headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert r.json() == source.mesh_state()
    finally:
        await handle.aclose()


def test_serve_admin_from_config_starts_only_when_configured() -> None:
    source = _Static({"users": {"endpoints": []}})
    assert serve_admin_from_config(source, meshlib.MeshConfig()) is None
    config = meshlib.MeshConfig(admin_addr=":0", admin_token=TOKEN)
    server = serve_admin_from_config(source, config)
    assert server is not None
    try:
        r = httpx.get(f"{server.url}/mesh/state", auth=("x", TOKEN), trust_env=False)
        assert r.status_code == 200
        assert r.json() == source.mesh_state()
    finally:
        server.stop()
    server.stop()  # idempotent


def test_basic_credentials_must_be_well_formed() -> None:
    with AdminServer(_Static({}), addr=":0", token=TOKEN) as admin:
        garbage = httpx.get(
            f"{admin.url}/", headers={"Authorization": "Basic !!!"}, trust_env=False
        )
        no_colon = base64.b64encode(TOKEN.encode()).decode()
        bare = httpx.get(
            f"{admin.url}/", headers={"Authorization": f"Basic {no_colon}"}, trust_env=False
        )
        other = httpx.get(
            f"{admin.url}/", headers={"Authorization": f"Token {TOKEN}"}, trust_env=False
        )
    assert garbage.status_code == bare.status_code == other.status_code == 401
