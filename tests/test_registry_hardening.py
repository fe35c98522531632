"""Hostile registry data: addresses judged offline (none of them is ever dialled), and hostile
Consul answers (all-invalid, huge, dripping, error bodies) served from loopback only."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest

import meshlib
from meshlib.consul.parse import parse_health_entries
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul

# Every one of these reaches 169.254.169.254 through getaddrinfo / inet_aton.
METADATA_SPELLINGS = [
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "[::ffff:a9fe:a9fe]",
    "2852039166",
    "0xa9fea9fe",
    "0XA9FEA9FE",
    "0251.0376.0251.0376",
    "169.254.43518",
    "169.16689662",
    "0xa9.0xfe.0xa9.0xfe",
    "0251.0376.0xa9fe",
    "2852039166.",
    "fe80::1",
]


def _entry(address: str, port: int = 8080, sid: str = "x") -> dict[str, object]:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {"ID": sid, "Service": "users", "Address": address, "Port": port},
        "Checks": [],
    }


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_address_is_refused_in_every_spelling(host: str) -> None:
    parsed = parse_health_entries([_entry(host), _entry("127.0.0.1", sid="good")])
    assert [e.host for e in parsed.endpoints] == ["127.0.0.1"]
    assert len(parsed.rejected) == 1
    assert "'x'" in parsed.rejected[0]
    from meshlib.consul.parse import address_refusal

    assert address_refusal(host) is not None


def test_non_canonical_numeric_hosts_name_the_address_they_mean() -> None:
    from meshlib.endpoint import inet_aton_value, validate_host

    with pytest.raises(ValueError, match=r"spelling of the IPv4 address 127\.0\.0\.1;"):
        validate_host("0x7f.1")
    with pytest.raises(ValueError, match="last label is never all digits"):
        validate_host("08.1.1.1")
    with pytest.raises(ValueError, match="last label is never all digits"):
        validate_host("1.2.3.4.5")
    assert inet_aton_value("2852039166") == inet_aton_value("169.254.43518")
    assert str(inet_aton_value("0251.0376.0251.0376")) == "169.254.169.254"
    assert inet_aton_value("256.1.1.1") is None
    assert inet_aton_value("1.2.3.4.5") is None
    assert inet_aton_value("08.1.1.1") is None
    assert inet_aton_value("users") is None


def test_ordinary_hosts_and_mapped_loopback_are_still_accepted() -> None:
    from meshlib.consul.parse import address_refusal

    for host in ["127.0.0.1", "10.1.2.3", "::1", "users.service.consul", "a1.b2", "node-7"]:
        assert address_refusal(host) is None, host
    assert address_refusal("::ffff:127.0.0.1") is None
    assert address_refusal("::ffff:0.0.0.0") is not None
    assert address_refusal("169.254.169.254", allow_link_local=True) is None
    assert address_refusal("::ffff:a9fe:a9fe", allow_link_local=True) is None


# -- end to end: FakeConsul, and scripted Consul-like servers on loopback ----------------------


def _settings(port: int) -> meshlib.ConsulSettings:
    return meshlib.ConsulSettings(host="127.0.0.1", port=port)


async def _until(cond: Callable[[], bool], limit: float = 3.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


def _ports(d: meshlib.ConsulDiscovery, service: str = "users") -> list[int]:
    res = d.lookup(Target(service))
    return [] if res is None else sorted(e.port for e in res.endpoints)


async def test_an_answer_of_only_invalid_entries_keeps_the_last_good_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FakeConsul() as c, caplog.at_level(logging.WARNING, logger="meshlib.discovery"):
        c.register_service("users", service_id="good", address="127.0.0.1", port=8001)
        with closing(meshlib.ConsulDiscovery(_settings(c.port))) as d:
            assert _ports(d) == []
            assert (await d.resolve(Target("users"))) is not None
            assert _ports(d) == [8001]
            c.deregister("good")
            c.register_service("users", service_id="bad", address="0x7f.1", port=8002)
            await _until(lambda: d.watch_state()["users"]["rejected_updates"] == 1)
            res = d.lookup(Target("users"))
            assert res is not None
            assert [e.port for e in res.endpoints] == [8001]
            assert res.stale
            state = d.watch_state()["users"]
            assert state["invalid_entries"] == 1
            assert "all invalid" in state["last_error"]
            assert "only invalid entries" in caplog.text
            # Invalid entries next to a good one: counted and logged on every answer, even
            # when the valid set does not change.
            c.register_service("users", service_id="good", address="127.0.0.1", port=8001)
            await _until(lambda: not d.lookup(Target("users")).stale)  # type: ignore[union-attr]
            assert d.watch_state()["users"]["invalid_entries"] == 1
            caplog.clear()
            c.register_service("users", service_id="bad2", address="0251.0.0.1", port=8003)
            await _until(lambda: d.watch_state()["users"]["invalid_entries"] == 2)
            assert _ports(d) == [8001]
            assert d.watch_state()["users"]["invalid_entries_total"] >= 4
            assert "2 invalid entries for users" in caplog.text


Handler = Callable[[str, asyncio.StreamWriter], Awaitable[None]]


class _Scripted:
    """A Consul-like HTTP/1.1 server on 127.0.0.1 whose answers a test scripts per request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def __aenter__(self) -> "_Scripted":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Python 3.11's wait_closed does not wait for handlers; close their sockets ourselves.
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.paths.append(path)
                await self.handler(path, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _entries(port: int) -> bytes:
    return (
        b'[{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"ID":"u0","Service":"users",'
        b'"Address":"127.0.0.1","Port":%d},"Checks":[]}]' % port
    )


async def _answer(
    writer: asyncio.StreamWriter, body: bytes, *, status: str = "200 OK", index: int = 5
) -> None:
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def test_a_dripping_consul_cannot_pin_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(path: str, writer: asyncio.StreamWriter) -> None:
        if "index=" not in path:
            await _answer(writer, _entries(8001))
            return
        for byte in b"HTTP/1.1 200 OK\r\nX-Consul-Index: 6\r\n" * 100:  # bounded: ~7 min max
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    opts = meshlib.ConsulOptions(wait=1.0, query_margin=0.3, error_backoff_min=0.1)
    async with _Scripted(handler) as server:
        with caplog.at_level(logging.WARNING, logger="meshlib.discovery"):
            with closing(meshlib.ConsulDiscovery(_settings(server.port), opts)) as d:
                assert await d.resolve(Target("users")) is not None
                started = time.monotonic()
                # The blocking query's deadline is 1 x 17/16 + 0.3 s; the watch must then fail
                # that round, serve stale, and ask again.
                await _until(lambda: "no complete answer within" in caplog.text, limit=4.0)
                assert time.monotonic() - started < 3.0
                blocking = [p for p in server.paths if "index=" in p]
                await _until(lambda: len(server.paths) >= 4, limit=4.0)
                assert blocking
                assert _ports(d) == [8001]


async def test_error_bodies_are_capped_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    body = b"boom\nFORGED 2026-01-01 CRITICAL admin logged in\r\n" + b"x" * 1_000_000
    calls = [0]

    async def handler(path: str, writer: asyncio.StreamWriter) -> None:
        calls[0] += 1
        if calls[0] == 1:
            await _answer(writer, _entries(8001))
        else:
            await _answer(writer, body, status="500 Internal Server Error")

    opts = meshlib.ConsulOptions(wait=1.0, error_backoff_min=0.05, min_interval=0.01)
    async with _Scripted(handler) as server:
        with caplog.at_level(logging.WARNING, logger="meshlib.discovery"):
            with closing(meshlib.ConsulDiscovery(_settings(server.port), opts)) as d:
                assert await d.resolve(Target("users")) is not None
                await _until(lambda: d.watch_state()["users"]["errors"] >= 1)
                error = d.watch_state()["users"]["last_error"]
                assert len(error) < 500
                assert "\n" not in error
                assert "\r" not in error
                assert "more characters" in error
                assert _ports(d) == [8001]
    records = [r for r in caplog.records if r.name == "meshlib.discovery"]
    assert records
    for r in records:
        text = r.getMessage()
        assert "\n" not in text, text[:200]
        assert len(text) < 2000, text[:200]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_response_beyond_the_size_cap_fails_the_round_clearly(chunked: bool) -> None:
    big = b"[" + b",".join([_entries(8001)[1:-1]] * 2000) + b"]"
    assert len(big) > 200_000

    async def handler(path: str, writer: asyncio.StreamWriter) -> None:
        if not chunked:
            await _answer(writer, big)
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(big), 16384):
            part = big[i : i + 16384]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    opts = meshlib.ConsulOptions(max_response_bytes=65536, first_timeout=3.0)
    async with _Scripted(handler) as server:
        with closing(meshlib.ConsulDiscovery(_settings(server.port), opts)) as d:
            with pytest.raises(meshlib.DiscoveryError, match="MESH_CONSUL_MAX_RESPONSE_BYTES") as e:
                await d.resolve(Target("users"))
            assert "65536-byte cap" in str(e.value)
            assert len(str(e.value)) < 600


def _connections_to(port: int) -> int | None:
    try:
        lines = Path("/proc/self/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    count = 0
    for line in lines:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
            count += 1
    return count


async def test_watches_are_bounded_and_the_rest_are_polled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from meshlib.consul.http import POLL_CONNECTIONS

    n = 40
    with FakeConsul() as c:
        for i in range(n):
            c.register_service(f"s{i}", service_id=f"s{i}", address="127.0.0.1", port=10000 + i)
        opts = meshlib.ConsulOptions(wait=30.0, max_watches=3, poll_interval=0.2)
        with caplog.at_level(logging.WARNING, logger="meshlib.discovery"):
            with closing(meshlib.ConsulDiscovery(_settings(c.port), opts)) as d:
                results = await asyncio.gather(*(d.resolve(Target(f"s{i}")) for i in range(n)))
                assert all(r is not None and len(r.endpoints) == 1 for r in results)
                modes = [s["mode"] for s in d.watch_state().values()]
                assert modes.count("blocking") == 3
                assert modes.count("polling") == n - 3
                assert "MESH_CONSUL_MAX_WATCHES=3" in caplog.text
                await asyncio.sleep(0.5)  # a few poll rounds
                sockets = _connections_to(c.port)
                if sockets is not None:
                    assert sockets <= 3 + POLL_CONNECTIONS
                # A polled service still follows changes, within its poll interval.
                polled = next(t for t, s in d.watch_state().items() if s["mode"] == "polling")
                c.register_service(polled, service_id=f"{polled}-b", address="127.0.0.1", port=9)
                await _until(lambda: len(_ports(d, polled)) == 2)
        # Closing frees the blocking slots; nothing is left connected.
        async with httpx.AsyncClient() as probe:
            assert (await probe.get(f"http://{c.http_addr}/v1/status/leader")).status_code == 200
