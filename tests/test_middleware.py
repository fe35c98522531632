"""Deadline propagation over plain HTTP: inbound ASGI and WSGI middleware cap outbound calls."""

import json
from typing import Any

import meshlib
from meshlib.scope.context import current_deadline
from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


async def test_asgi_incoming_deadline_caps_outbound_calls() -> None:
    async with Upstream(UpstreamBehaviour(name="b")) as b:
        client = meshlib.AsyncMeshClient(
            discovery=meshlib.StaticDiscovery({"b": [f"127.0.0.1:{b.port}"]})
        )
        outbound: dict[str, Any] = {}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            outbound.update((await client.get("http://b/echo")).json())
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"done"})

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "headers": [(b"x-mesh-deadline-ms", b"900")]}
        await meshlib.MeshASGIMiddleware(app)(scope, None, send)
        await client.aclose()
    assert 0 < int(outbound["headers"]["x-mesh-deadline-ms"]) <= 900
    assert sent[-1]["body"] == b"done"


async def test_asgi_ignores_malformed_and_caps_huge_deadlines() -> None:
    seen: list[float | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        d = current_deadline()
        seen.append(None if d is None else d.remaining())

    mw = meshlib.MeshASGIMiddleware(app, max_deadline=10.0)
    await mw({"type": "http", "headers": [(b"x-mesh-deadline-ms", b"soon")]}, None, None)
    await mw({"type": "http", "headers": [(b"x-mesh-deadline-ms", b"99999999999")]}, None, None)
    await mw({"type": "lifespan"}, None, None)
    assert seen[0] is None
    assert seen[1] is not None
    assert 9.0 < seen[1] <= 10.0
    assert current_deadline() is None


def test_wsgi_incoming_deadline_caps_outbound_calls_while_streaming() -> None:
    with UpstreamThread(UpstreamBehaviour(name="b")) as b:
        client = meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"b": [f"127.0.0.1:{b.port}"]})
        )

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            start_response("200 OK", [("Content-Type", "application/json")])

            def body() -> Any:
                yield client.get("http://b/echo").content

            return body()

        statuses: list[str] = []
        environ = {"HTTP_X_MESH_DEADLINE_MS": "700"}
        chunks = list(meshlib.MeshWSGIMiddleware(app)(environ, lambda s, h: statuses.append(s)))
        client.close()
    echo = json.loads(b"".join(chunks))
    assert 0 < int(echo["headers"]["x-mesh-deadline-ms"]) <= 700
    assert statuses == ["200 OK"]
    assert current_deadline() is None


_GARBAGE_DEADLINES = [
    b"\xb2",
    b"\xb9\xb2\xb3",
    "١٢".encode(),
    b"\xd9\xa1",
    b"-5",
    b"+5",
    b"1e3",
    b"",
    b" ",
    b"12\x00",
]


async def test_asgi_ignores_garbage_deadlines_without_raising() -> None:
    seen: list[float | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        d = current_deadline()
        seen.append(None if d is None else d.remaining())

    mw = meshlib.MeshASGIMiddleware(app)
    for raw in _GARBAGE_DEADLINES:
        await mw({"type": "http", "headers": [(b"x-mesh-deadline-ms", raw)]}, None, None)
    assert seen == [None] * len(_GARBAGE_DEADLINES)


def test_wsgi_ignores_garbage_deadlines_without_raising() -> None:
    seen: list[float | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        d = current_deadline()
        seen.append(None if d is None else d.remaining())
        start_response("200 OK", [])
        return [b"ok"]

    mw = meshlib.MeshWSGIMiddleware(app)
    values: list[Any] = [raw.decode("latin-1") for raw in _GARBAGE_DEADLINES]
    values += ["١٢", "²", 12, None]
    for value in values:
        body = mw({"HTTP_X_MESH_DEADLINE_MS": value}, lambda s, h: None)
        assert list(body) == [b"ok"]
    assert seen == [None] * len(values)


def test_parse_deadline_accepts_only_ascii_digits() -> None:
    from meshlib.scope.context import parse_deadline

    assert parse_deadline("250") == 0.25
    assert parse_deadline(" 250 ") == 0.25
    for value in ["²", "١٢", "\uff11\uff12", "0x10", "1_000", "-1", "1.5", "9" * 13]:
        assert parse_deadline(value) is None, value
