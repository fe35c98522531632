"""The clients build a bodiless request directly only when httpx would build the same one.

Offline: builds requests with a mesh client and a stock httpx client configured alike and
compares everything a request carries (method, URL, headers in order, extensions, body)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import meshlib


def _same(a: httpx.Request, b: httpx.Request) -> None:
    assert a.method == b.method
    assert a.url == b.url
    assert a.headers.raw == b.headers.raw
    assert a.extensions == b.extensions
    assert a.content == b.content
    assert type(a.stream) is type(b.stream)
    assert list(a.stream) == list(b.stream)  # type: ignore[call-overload]


CLIENTS: list[dict[str, Any]] = [
    {},
    {"headers": {"X-Team": "a", "Host": "pinned.example"}},
    {"base_url": "http://users/v1/", "timeout": 3.5},
    {"params": {"q": "1"}},
    {"cookies": {"session": "s"}},
]
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "http://users/a?b=c", {}),
    ("HEAD", "http://users:8080/", {}),
    ("DELETE", "http://users/x", {}),
    ("OPTIONS", "http://users/", {}),
    ("POST", "http://users/", {}),
    ("PUT", "http://users/", {"content": b"body"}),
    ("GET", "http://users/", {"params": {"p": "2"}, "headers": {"X-Call": "1"}}),
    ("GET", "http://users/", {"timeout": 1.0, "extensions": {"sni_hostname": "users"}}),
    ("get", "http://users/", {}),
]


@pytest.mark.parametrize("settings", CLIENTS)
@pytest.mark.parametrize(("method", "url", "kwargs"), CALLS)
def test_a_request_is_the_one_httpx_builds(
    settings: dict[str, Any], method: str, url: str, kwargs: dict[str, Any]
) -> None:
    if settings.get("base_url"):
        url = url.replace("http://users/", "")
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:1"]})
    with (
        meshlib.MeshClient(discovery=discovery, **settings) as mesh,
        httpx.Client(**settings) as stock,
    ):
        _same(mesh.build_request(method, url, **kwargs), stock.build_request(method, url, **kwargs))
        _same(mesh.build_request(method, url, **kwargs), stock.build_request(method, url, **kwargs))


def test_the_client_headers_are_read_at_each_request() -> None:
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:1"]})
    with meshlib.MeshClient(discovery=discovery) as mesh:
        first = mesh.build_request("GET", "http://users/")
        mesh.headers["X-Later"] = "yes"
        mesh.cookies.set("late", "cookie")
        later = mesh.build_request("GET", "http://users/")
    assert "x-later" not in first.headers
    assert later.headers["x-later"] == "yes"
    assert later.headers["cookie"] == "late=cookie"


def test_a_plain_get_is_built_without_httpx_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = httpx.Client.build_request

    def spy(self: httpx.Client, method: str, url: Any, **kwargs: Any) -> httpx.Request:
        built.append(method)
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(httpx.Client, "build_request", spy)
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:1"]})
    with meshlib.MeshClient(discovery=discovery) as mesh:
        mesh.build_request("GET", "http://users/")
        mesh.build_request("POST", "http://users/")
    assert built == ["POST"]
