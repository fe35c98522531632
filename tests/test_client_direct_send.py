"""The clients' fast paths: httpx's auth and redirect layers are skipped only when they
would do nothing, and whatever they would do still happens (end to end on loopback); and
``response.elapsed`` is set on a call whose body the mesh read; and a body the mesh reads skips
httpx's stream layers, leaving the response as ``aread`` leaves it."""

from __future__ import annotations

import base64
import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import meshlib


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/target")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/gzip":
            body = gzip.compress(b"decoded " * 64)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = (self.headers.get("Authorization") or "-").encode()
        self.send_response(200)
        self.send_header("X-Port", str(self.client_address[1]))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _discovery(port: int) -> meshlib.StaticDiscovery:
    return meshlib.StaticDiscovery({"svc": [f"127.0.0.1:{port}"]})


def _no_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make httpx's auth layer fail if it is entered: proves the direct path was taken."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx's auth and redirect layers were entered")

    monkeypatch.setattr(httpx.Client, "_send_handling_auth", refuse)
    monkeypatch.setattr(httpx.AsyncClient, "_send_handling_auth", refuse)


def test_a_plain_call_skips_the_layers_and_a_redirect_gets_next_request_as_in_httpx(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with httpx.Client() as stock:
        expected = stock.get(f"http://127.0.0.1:{server}/redirect")
    _no_layers(monkeypatch)
    with meshlib.MeshClient(discovery=_discovery(server)) as client:
        ok = client.get("http://svc/target")
        redirect = client.get("http://svc/redirect")
    assert ok.status_code == 200
    assert ok.text == "-"
    assert ok.history == []
    assert redirect.status_code == 302
    assert redirect.history == []
    assert expected.next_request is not None
    assert redirect.next_request is not None
    assert redirect.next_request.url == httpx.URL("http://svc/target")
    assert redirect.next_request.method == expected.next_request.method
    assert ok.elapsed.total_seconds() > 0  # httpx could not stamp it: the mesh read the body


async def test_the_async_client_takes_the_same_direct_path(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_layers(monkeypatch)
    async with meshlib.AsyncMeshClient(discovery=_discovery(server)) as client:
        ok = await client.get("http://svc/target")
        redirect = await client.get("http://svc/redirect")
        async with client.stream("GET", "http://svc/target") as streamed:
            assert not streamed.is_stream_consumed
            body = await streamed.aread()
    assert ok.text == "-"
    assert body == b"-"
    assert ok.elapsed.total_seconds() > 0  # read inside the mesh, stamped all the same
    assert redirect.next_request is not None
    assert redirect.next_request.url == httpx.URL("http://svc/target")


def test_redirects_are_followed_when_asked_per_call_or_per_client(server: int) -> None:
    with meshlib.MeshClient(discovery=_discovery(server)) as client:
        followed = client.get("http://svc/redirect", follow_redirects=True)
    assert followed.status_code == 200
    assert len(followed.history) == 1
    with meshlib.MeshClient(discovery=_discovery(server), follow_redirects=True) as client:
        followed = client.get("http://svc/redirect")
    assert followed.status_code == 200
    assert len(followed.history) == 1


async def test_event_hooks_still_run(server: int) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"response {response.status_code}")

    hooks = {"request": [on_request], "response": [on_response]}
    async with meshlib.AsyncMeshClient(discovery=_discovery(server), event_hooks=hooks) as client:
        await client.get("http://svc/target")
    assert seen == ["request /target", "response 200"]


def test_auth_from_the_client_the_call_or_the_url_is_still_sent(server: int) -> None:
    basic = "Basic " + base64.b64encode(b"u:p").decode()
    with meshlib.MeshClient(discovery=_discovery(server), auth=("u", "p")) as client:
        through_layers = client.get("http://svc/target")
    assert through_layers.text == basic
    assert through_layers.elapsed.total_seconds() > 0
    with meshlib.MeshClient(discovery=_discovery(server)) as client:
        assert client.get("http://svc/target", auth=("u", "p")).text == basic
        assert client.get("http://u:p@svc/target").text == basic


def test_a_closed_client_still_refuses_to_send(server: int) -> None:
    client = meshlib.MeshClient(discovery=_discovery(server))
    client.close()
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.get("http://svc/target")


async def test_a_body_read_in_the_mesh_skips_httpx_stream_layers_and_keeps_the_connection(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx's stream iterators were used")

    async with meshlib.AsyncMeshClient(discovery=_discovery(server)) as client:
        await client.get("http://svc/target")  # the connection is open from here on
        monkeypatch.setattr(httpx.Response, "aiter_raw", refuse)
        responses = [await client.get("http://svc/target") for _ in range(3)]
        monkeypatch.undo()
        decoded = await client.get("http://svc/gzip")  # Content-Encoding: through httpx
    for r in responses:
        assert r.content == b"-"
        assert r.is_stream_consumed
        assert r.is_closed
        assert r.num_bytes_downloaded == 1
    assert len({r.headers["x-port"] for r in responses}) == 1  # one kept-alive connection
    assert decoded.content == b"decoded " * 64
    assert decoded.num_bytes_downloaded < len(decoded.content)


def test_the_sync_client_reads_the_body_the_same_way(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx's stream iterators were used")

    with meshlib.MeshClient(discovery=_discovery(server)) as client:
        client.get("http://svc/target")
        monkeypatch.setattr(httpx.Response, "iter_raw", refuse)
        responses = [client.get("http://svc/target") for _ in range(3)]
        monkeypatch.undo()
        decoded = client.get("http://svc/gzip")
    for r in responses:
        assert r.content == b"-"
        assert r.is_stream_consumed
        assert r.is_closed
        assert r.num_bytes_downloaded == 1
    assert len({r.headers["x-port"] for r in responses}) == 1
    assert decoded.content == b"decoded " * 64
