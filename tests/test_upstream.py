"""The test upstream server: each behaviour knob, /echo, /control, keep-alive and the subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from meshlib.upstream import (
    SpawnedUpstream,
    Upstream,
    UpstreamBehaviour,
    UpstreamThread,
    behaviour_to_argv,
    main,
    spawn_upstream,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as c:
        yield c


async def _raw_exchange(port: int, payload: bytes, responses: int) -> tuple[list[bytes], int]:
    """Send ``payload`` on one connection and read ``responses`` Content-Length framed replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local_port = writer.get_extra_info("sockname")[1]
    out: list[bytes] = []
    try:
        writer.write(payload)
        for _ in range(responses):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            out.append(head + await reader.readexactly(length))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return out, local_port


# behaviour validation


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slow_fraction": 1.5}, "slow_fraction must be within [0, 1], got 1.5"),
        ({"fail_fraction": -0.1}, "fail_fraction must be within [0, 1], got -0.1"),
        ({"latency": -1.0}, "latency must be a finite number >= 0, got -1.0"),
        ({"slow_extra": float("inf")}, "slow_extra must be a finite number >= 0, got inf"),
        ({"fail_status": 102}, "fail_status must be within [200, 599], got 102"),
        ({"name": "a\r\nX-Evil: 1"}, "name must be non-empty printable ASCII"),
        ({"name": ""}, "name must be non-empty printable ASCII"),
        ({"retry_after": "1\n"}, "retry_after must be non-empty printable ASCII"),
    ],
)
def test_behaviour_rejects_bad_values(fields: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"name": "a", **fields}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        UpstreamBehaviour(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"latency": "1"}, {"body": "text"}, {"seed": True}, {"hang": 1}, {"fail_status": 503.0}],
)
def test_behaviour_rejects_wrong_types(fields: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        UpstreamBehaviour(name="a", **fields)  # type: ignore[arg-type]


def test_behaviour_is_frozen_and_keyword_only() -> None:
    b = UpstreamBehaviour(name="a")
    with pytest.raises(AttributeError):
        b.latency = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        UpstreamBehaviour("a")  # type: ignore[call-arg]


def test_updated_merges_fields_and_rejects_unknown_ones() -> None:
    b = UpstreamBehaviour(name="a", latency=0.5)
    assert b.updated({"body": "hi", "fail_fraction": 1}) == UpstreamBehaviour(
        name="a", latency=0.5, body=b"hi", fail_fraction=1
    )
    with pytest.raises(ValueError, match="unknown behaviour field"):
        b.updated({"latencyy": 1})


# serving


async def test_default_response_carries_body_and_upstream_header(
    client: httpx.AsyncClient,
) -> None:
    async with Upstream(UpstreamBehaviour(name="alpha", body=b"hello")) as up:
        assert up.url == f"http://127.0.0.1:{up.port}"
        r = await client.get(up.url + "/anything?x=1")
        assert (r.status_code, r.content, r.headers["x-upstream"]) == (200, b"hello", "alpha")
        head = await client.head(up.url + "/")
        assert head.headers["content-length"] == "5"
        assert head.content == b""
        assert up.stats().by_path == {"/anything": 1, "/": 1}


async def test_latency_is_added_to_every_response(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a", latency=0.1, fail_fraction=1.0)) as up:
        start = time.perf_counter()
        r = await client.get(up.url)
        assert r.status_code == 503
        assert time.perf_counter() - start >= 0.1


async def test_slow_fraction_follows_the_seeded_rng(client: httpx.AsyncClient) -> None:
    seed, n = 3, 8
    draws = random.Random(seed)
    expected = [draws.random() < 0.5 for _ in range(n)]
    assert 0 < sum(expected) < n  # the seed gives a mix (a fixed property of random.Random)
    b = UpstreamBehaviour(name="a", slow_fraction=0.5, slow_extra=0.06, seed=seed)
    async with Upstream(b) as up:
        observed = []
        for _ in range(n):
            start = time.perf_counter()
            await client.get(up.url)
            observed.append(time.perf_counter() - start >= 0.06)
    assert observed == expected


async def test_fail_fraction_is_reproducible_and_counted(client: httpx.AsyncClient) -> None:
    seed, n = 11, 20
    draws = random.Random(seed)
    expected = [503 if draws.random() < 0.3 else 200 for _ in range(n)]
    b = UpstreamBehaviour(name="a", fail_fraction=0.3, seed=seed)
    for _ in range(2):  # two servers, same seed: same sequence
        async with Upstream(b) as up:
            statuses = [(await client.get(up.url)).status_code for _ in range(n)]
            assert statuses == expected
            assert up.stats().failures == expected.count(503)
            assert up.stats().total == n


async def test_injected_rng_is_used(client: httpx.AsyncClient) -> None:
    class AlwaysLow(random.Random):
        def random(self) -> float:
            return 0.0

    async with Upstream(UpstreamBehaviour(name="a", fail_fraction=0.01), rng=AlwaysLow()) as up:
        assert (await client.get(up.url)).status_code == 503


async def test_failures_use_status_and_retry_after(client: httpx.AsyncClient) -> None:
    b = UpstreamBehaviour(name="a", fail_fraction=1.0, fail_status=429, retry_after="2")
    async with Upstream(b) as up:
        r = await client.get(up.url + "/echo")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"
        assert r.headers["x-upstream"] == "a"
        assert up.stats().failures == 1


async def test_hang_reads_the_request_and_never_answers(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a", hang=True)) as up:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(up.url + "/x", timeout=0.2)
        assert up.stats().total == 1
        assert up.stats().by_path == {"/x": 1}


async def test_echo_describes_the_request(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="echoer")) as up:
        r = await client.post(up.url + "/echo?q=1", content=b"hello world", headers={"X-T": "v"})
        doc = r.json()
        assert r.headers["content-type"] == "application/json"
        assert doc["method"] == "POST"
        assert (doc["path"], doc["query"]) == ("/echo", "q=1")
        assert doc["headers"]["x-t"] == "v"
        assert doc["headers"]["content-length"] == "11"
        assert doc["body_length"] == 11
        assert doc["server"] == "echoer"
        assert isinstance(doc["peer_port"], int)


async def test_keep_alive_pipelining_and_chunked_bodies() -> None:
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    plain = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    b = UpstreamBehaviour(name="a", latency=0.02)  # queued replies must keep request order
    async with Upstream(b) as up:
        replies, local_port = await _raw_exchange(up.port, chunked + plain + plain, 3)
        docs = [json.loads(r.split(b"\r\n\r\n", 1)[1]) for r in replies]
        assert [d["method"] for d in docs] == ["POST", "GET", "GET"]
        assert docs[0]["body_length"] == 11
        assert {d["peer_port"] for d in docs} == {local_port}
        stats = up.stats()
        assert (stats.total, stats.connections) == (3, 1)


async def test_httpx_reuses_one_connection(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        ports = {(await client.get(up.url + "/echo")).json()["peer_port"] for _ in range(5)}
        assert len(ports) == 1
        assert up.stats().connections == 1


async def test_connection_close_is_honoured() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2.0)  # returns only at EOF
        writer.close()
        await writer.wait_closed()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close" in data
        assert data.endswith(b"\r\n\r\nok")


async def test_expect_100_continue_gets_an_interim_response() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        writer.write(b"abc")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
        writer.close()
        await writer.wait_closed()
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert final.startswith(b"HTTP/1.1 200 OK")


async def test_malformed_request_gets_400() -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        await writer.wait_closed()
        assert data.startswith(b"HTTP/1.1 400 ")


async def test_recent_headers_keep_the_last_n(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a"), history=2) as up:
        for i in range(3):
            await client.get(up.url, headers={"X-Req": str(i)})
        recent = up.stats().recent_headers
        assert [dict(h)["x-req"] for h in recent] == ["1", "2"]


async def test_set_behaviour_flips_at_runtime_and_reseeds(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        assert (await client.get(up.url)).status_code == 200
        up.set_behaviour(UpstreamBehaviour(name="a", fail_fraction=1.0))
        assert (await client.get(up.url)).status_code == 503
        up.set_behaviour(UpstreamBehaviour(name="b", fail_fraction=0.5, seed=5))
        draws = random.Random(5)
        expected = [503 if draws.random() < 0.5 else 200 for _ in range(6)]
        assert [(await client.get(up.url)).status_code for _ in range(6)] == expected
        assert (await client.get(up.url)).headers["x-upstream"] == "b"
        up.reset_stats()
        assert up.stats().total == 0


async def test_control_endpoint_reads_and_changes_behaviour(client: httpx.AsyncClient) -> None:
    async with Upstream(UpstreamBehaviour(name="a")) as up:
        await client.get(up.url + "/p")
        state = (await client.get(up.url + "/control")).json()
        assert state["behaviour"]["name"] == "a"
        assert state["stats"]["by_path"] == {"/p": 1}  # /control itself is not counted

        r = await client.post(up.url + "/control", json={"fail_fraction": 1.0, "body": "x"})
        assert r.status_code == 200
        assert r.json()["behaviour"]["fail_fraction"] == 1.0
        assert up.behaviour == UpstreamBehaviour(name="a", fail_fraction=1.0, body=b"x")
        assert (await client.get(up.url)).status_code == 503

        bad = await client.post(up.url + "/control", json={"fail_fraction": 2})
        assert bad.status_code == 400
        assert "fail_fraction must be within" in bad.json()["error"]
        assert (await client.post(up.url + "/control", json={"nope": 1})).status_code == 400
        assert (await client.post(up.url + "/control", content=b"{")).status_code == 400
        assert (await client.put(up.url + "/control", json={})).status_code == 405
        assert up.behaviour.fail_fraction == 1.0  # unchanged by the rejected documents

        r = await client.post(up.url + "/control", json={"reset_stats": True, "fail_fraction": 0})
        assert r.json()["stats"]["total"] == 0
        assert (await client.get(up.url)).status_code == 200


def test_upstream_thread_serves_sync_clients() -> None:
    with UpstreamThread(UpstreamBehaviour(name="t")) as up, httpx.Client(trust_env=False) as c:
        assert c.get(up.url).headers["x-upstream"] == "t"
        up.set_behaviour(UpstreamBehaviour(name="t", fail_fraction=1.0, fail_status=500))
        assert c.get(up.url).status_code == 500
        assert up.stats().total == 2
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as c:
        c.get(up.url)  # stopped: the port no longer listens


def test_upstream_thread_reports_bind_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="failed to start"):
            UpstreamThread(UpstreamBehaviour(name="t"), port=port).start()


# subprocess


def test_cli_rejects_invalid_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--name", "a", "--fail-fraction", "3"])
    assert exc.value.code == 2
    assert "fail_fraction must be within [0, 1], got 3.0" in capsys.readouterr().err


def test_behaviour_to_argv_round_trips() -> None:
    b = UpstreamBehaviour(name="a", latency=0.25, retry_after="1", hang=True, seed=4, body=b"z")
    argv = behaviour_to_argv(b)
    assert argv[:2] == ["--name", "a"]
    assert "--hang" in argv
    assert argv[argv.index("--seed") + 1] == "4"


def test_spawned_upstream_serves_is_controlled_and_stops_by_pid() -> None:
    b = UpstreamBehaviour(name="sub", retry_after="3", seed=1)
    up: SpawnedUpstream = spawn_upstream(b)
    try:
        with httpx.Client(trust_env=False, timeout=5.0) as c:
            r = c.get(up.url + "/echo")
            assert r.json()["server"] == "sub"
            up.set_behaviour(UpstreamBehaviour(name="sub", fail_fraction=1.0, retry_after="3"))
            failed = c.get(up.url)
            assert (failed.status_code, failed.headers["retry-after"]) == (503, "3")
            state = up.control(fail_fraction=0.0)
            assert state["stats"]["failures"] == 1
            assert c.get(up.url).status_code == 200
            assert up.state()["stats"]["total"] == 3
    finally:
        code = up.stop()
    assert code == 0  # SIGTERM is a clean exit
    assert up.process.returncode == 0
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as c:
        c.get(up.url)


def test_spawned_upstream_exits_on_sigint_and_reports_early_death() -> None:
    with spawn_upstream(UpstreamBehaviour(name="s")) as up:
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(5.0) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with code 1"):
            spawn_upstream(UpstreamBehaviour(name="s"), port=port)


async def test_bounded_capacity_queues_requests_in_arrival_order() -> None:
    # 50 req/s: one request every 20 ms; ten at once take about 200 ms for the last one.
    async with Upstream(UpstreamBehaviour(name="busy", capacity=50)) as up:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{up.port}") as client:
            started = time.monotonic()
            done: list[float] = []

            async def one() -> None:
                assert (await client.get("/")).status_code == 200
                done.append(time.monotonic() - started)

            await asyncio.gather(*(one() for _ in range(10)))
            assert min(done) < 0.1
            assert max(done) >= 0.18
            # A new behaviour starts with an empty queue: with ten requests queued (200 ms of
            # work), the next one after the change is served within one request's time.
            backlog = [asyncio.ensure_future(one()) for _ in range(10)]
            for _ in range(100):  # bounded: until all ten have arrived (and queued)
                if up.stats().total == 20:
                    break
                await asyncio.sleep(0.002)
            assert up.stats().total == 20
            up.set_behaviour(UpstreamBehaviour(name="busy", capacity=50))
            t = time.monotonic()
            await client.get("/")
            assert time.monotonic() - t < 0.1
            await asyncio.gather(*backlog)


def test_capacity_is_validated_and_spawned_with() -> None:
    with pytest.raises(ValueError, match="capacity"):
        UpstreamBehaviour(name="x", capacity=-1)
    assert "--capacity" in behaviour_to_argv(UpstreamBehaviour(name="x", capacity=300.0))
