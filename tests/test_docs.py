"""Every ```python block of the documentation runs, so the docs cannot rot.

The blocks of ``docs/*.md`` and ``README.md`` are extracted and executed, one test per block
(``getting-started.md-2``: the third Python block of that page). A block with top-level
``await`` / ``async with`` is compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and run with
``asyncio.run``. Functions named ``test_*`` that a block defines are then called, with their
arguments taken from pytest fixtures (meshlib's ``fake_consul_env`` and the like).

A block says what it needs in a directive: an HTML comment on the line just before the fence
(invisible on the rendered page), or a comment as the block's first line::

    <!-- doc-test: users -->            # or, inside the block:  # doc-test: users

The directive is a list of words: the names of setups defined below (``users``, ``consul``,
...), which start real upstreams on 127.0.0.1, set ``MESH_*`` / ``CONSUL_*`` variables and
provide names; ``continue``, to run after the page's previous block in the same namespace (the
previous blocks, with their setups, run again first, so each test stands alone); or ``skip``,
for the rare fragment that cannot run (a server that serves forever), followed by the reason.
Files whose text this suite does not own (the README, the admin page) get their directives
from ``EXTERNAL_DIRECTIVES``.

Every block starts from an environment without ``MESH_*``, ``CONSUL_*`` or ``OTEL_*``
variables, any client a block leaves open is closed, and ``os.environ`` is restored afterwards.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import meshlib
from meshlib.testing import FakeConsul, UpstreamBehaviour, UpstreamThread

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

# Directives for blocks in files whose text this suite does not own: file name -> (a string
# that occurs in exactly one Python block of that file, the directive for that block).
EXTERNAL_DIRECTIVES: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        ("async with meshlib.AsyncMeshClient(timeout=5.0) as client:", "users"),
        ("with meshlib.MeshClient() as client:", "users"),
        ("meshlib.StaticDiscovery({", "meshlib"),
        ("app.add_middleware(meshlib.MeshASGIMiddleware)", "users app"),
    ],
    "admin.md": [
        ("meshlib.admin.serve_admin_from_config(client)", "admin"),
        ("await meshlib.admin.start_admin_from_config(client)", "admin"),
        ("from meshlib.admin import AdminServer, start_admin", "admin"),
    ],
}

MAX_SKIPPED_SHARE = 0.2
USER = {"id": 42, "name": "Ada"}
"""What the ``users`` upstreams answer on every path."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")
_HTML_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<words>.*?)\s*-->\s*$")
_CODE_DIRECTIVE = re.compile(r"^\s*#\s*doc-test:\s*(?P<words>.*?)\s*$")


@dataclass(frozen=True)
class Block:
    """One ```python block of a Markdown file."""

    path: Path
    index: int
    """Position among the file's Python blocks (0 for the first)."""
    line: int
    """1-based line of the block's first code line."""
    code: str
    directive: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.path.name}-{self.index}"

    @property
    def skipped(self) -> bool:
        return bool(self.directive) and self.directive[0] == "skip"


def extract_blocks(path: Path) -> list[Block]:
    """The Python blocks of ``path``, dedented, with their directives."""
    lines = path.read_text(encoding="utf-8").splitlines()
    external = EXTERNAL_DIRECTIVES.get(path.name, [])
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, info = m["fence"], len(m["indent"]), m["info"]
        start = i + 1
        end = start
        while end < len(lines):
            close = _FENCE.match(lines[end])
            if close and close["fence"].startswith(fence[0] * len(fence)) and not close["info"]:
                break
            end += 1
        if info.split()[:1] in (["python"], ["py"]):
            body = [line[indent:] if line[:indent].isspace() else line for line in lines[start:end]]
            code = "\n".join(body) + "\n"
            words: list[str] = []
            previous = lines[i - 1] if i > 0 else ""
            first = body[0] if body else ""
            if d := _HTML_DIRECTIVE.match(previous) or _CODE_DIRECTIVE.match(first):
                words = d["words"].split()
            for needle, directive in external:
                if needle in code:
                    words = directive.split()
            blocks.append(Block(path, len(blocks), start + 1, code, tuple(words)))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]


# -- setups ------------------------------------------------------------------------------------


@dataclass
class Env:
    """What a setup works with: the block's namespace, the environment, and cleanups."""

    ns: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack
    checks: list[Callable[[], None]] = field(default_factory=list)
    """Called after the block ran: assertions about what it did."""
    state: dict[str, Any] = field(default_factory=dict)


SETUPS: dict[str, Callable[[Env], None]] = {}


def setup(name: str) -> Callable[[Callable[[Env], None]], Callable[[Env], None]]:
    def register(fn: Callable[[Env], None]) -> Callable[[Env], None]:
        SETUPS[name] = fn
        return fn

    return register


def _upstreams(env: Env, key: str, behaviours: list[UpstreamBehaviour]) -> list[UpstreamThread]:
    if key not in env.state:
        env.state[key] = [env.stack.enter_context(UpstreamThread(b)) for b in behaviours]
    servers: list[UpstreamThread] = env.state[key]
    return servers


def _users(env: Env, **behaviour: Any) -> list[UpstreamThread]:
    body = json.dumps(USER).encode()
    return _upstreams(
        env,
        "users",
        [UpstreamBehaviour(name=f"users-{i}", body=body, seed=i, **behaviour) for i in (1, 2)],
    )


def _declare(env: Env, service: str, servers: list[UpstreamThread]) -> None:
    endpoints = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    env.monkeypatch.setenv("MESH_STATIC_ENDPOINTS", f"{service}={endpoints}")


@setup("users")
def _setup_users(env: Env) -> None:
    """Two healthy ``users`` replicas in ``MESH_STATIC_ENDPOINTS``."""
    _declare(env, "users", _users(env))


@setup("slow-users")
def _setup_slow_users(env: Env) -> None:
    """``users`` replicas that take 300 ms to answer."""
    _declare(env, "users", _users(env, latency=0.3))


@setup("hanging-users")
def _setup_hanging_users(env: Env) -> None:
    """One ``users`` replica that reads requests and never answers."""
    servers = _upstreams(env, "users", [UpstreamBehaviour(name="users-1", hang=True)])
    _declare(env, "users", servers)


@setup("failing-users")
def _setup_failing_users(env: Env) -> None:
    """Two ``users`` replicas that answer 503 to everything."""
    _declare(env, "users", _users(env, fail_fraction=1.0))


@setup("consul")
def _setup_consul(env: Env) -> None:
    """A FakeConsul at ``CONSUL_HTTP_ADDR`` with the two ``users`` replicas registered."""
    consul: FakeConsul = env.stack.enter_context(FakeConsul())
    for i, server in enumerate(_users(env), 1):
        consul.register_service(
            "users", service_id=f"users-{i}", address="127.0.0.1", port=server.port
        )
    env.monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.http_addr)
    env.state["consul"] = consul


@setup("canary")
def _setup_canary(env: Env) -> None:
    """FakeConsul at ``CONSUL_HTTP_ADDR``: ``users`` v1 and v2, split 90/10 by config entries
    (subsets ``stable`` and ``canary``)."""
    consul: FakeConsul = env.stack.enter_context(FakeConsul())
    for i, server in enumerate(_users(env), 1):
        consul.register_service(
            "users",
            service_id=f"users-{i}",
            address="127.0.0.1",
            port=server.port,
            meta={"version": f"v{i}"},
        )
    consul.set_config_entry(
        {
            "Kind": "service-resolver",
            "Name": "users",
            "DefaultSubset": "stable",
            "Subsets": {
                "stable": {"Filter": "Service.Meta.version == v1"},
                "canary": {"Filter": "Service.Meta.version == v2"},
            },
        }
    )
    consul.set_config_entry(
        {
            "Kind": "service-splitter",
            "Name": "users",
            "Splits": [
                {"Weight": 90, "ServiceSubset": "stable"},
                {"Weight": 10, "ServiceSubset": "canary"},
            ],
        }
    )
    env.monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.http_addr)
    env.state["consul"] = consul


@setup("consul-down")
def _setup_consul_down(env: Env) -> None:
    """``CONSUL_HTTP_ADDR`` names a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env.monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{port}")
    env.monkeypatch.setenv("MESH_DISCOVERY_TIMEOUT", "1s")


@setup("registration")
def _setup_registration(env: Env) -> None:
    """``MESH_SERVICE_*`` for a service ``orders``; needs ``consul``. ``serve_forever`` and
    ``serve`` stand in for a server, and check that ``orders`` is registered while they run."""
    if "consul" not in env.state:
        _setup_consul(env)
    consul: FakeConsul = env.state["consul"]
    env.monkeypatch.setenv("MESH_SERVICE_NAME", "orders")
    env.monkeypatch.setenv("MESH_SERVICE_PORT", "8000")
    env.monkeypatch.setenv("MESH_SERVICE_ADDRESS", "127.0.0.1")

    def registered() -> list[str]:
        entries = httpx.get(f"{consul.url}/v1/health/service/orders?passing").json()
        return [e["Service"]["ID"] for e in entries]

    def serve_forever() -> None:
        assert len(registered()) == 1, "orders is not registered while it serves"

    async def serve() -> None:
        serve_forever()

    def check() -> None:
        paths = [r.path for r in consul.requests]
        assert "/v1/agent/service/register" in paths, "the block never registered orders"
        assert registered() == [], "orders is still registered after the block"

    env.ns.update(serve_forever=serve_forever, serve=serve)
    env.checks.append(check)


@setup("meshlib")
def _setup_meshlib(env: Env) -> None:
    """``meshlib`` imported, for a fragment that assumes it."""
    env.ns["meshlib"] = meshlib


@setup("app")
def _setup_app(env: Env) -> None:
    """An ``app`` (FastAPI) and a ``client`` (AsyncMeshClient), as a fragment assumes."""
    from fastapi import FastAPI

    env.ns.update(meshlib=meshlib, app=FastAPI(), client=meshlib.AsyncMeshClient())


@setup("admin")
def _setup_admin(env: Env) -> None:
    """``MESH_ADMIN_ADDR`` on a free loopback port, ``meshlib.admin`` imported, and the clients,
    token and ``run_app`` a fragment assumes. The example port 9990 becomes a free one."""
    import meshlib.admin

    parse = meshlib.admin.parse_admin_addr

    def free_port_instead_of_9990(addr: str, token: str | None = None) -> tuple[str, int]:
        host, port = parse(addr, token)
        return host, 0 if port == 9990 else port

    env.monkeypatch.setattr(meshlib.admin, "parse_admin_addr", free_port_instead_of_9990)
    env.monkeypatch.setenv("MESH_ADMIN_ADDR", "127.0.0.1:0")
    discovery = meshlib.StaticDiscovery({"users": ["127.0.0.1:8001"], "orders": ["127.0.0.1:8002"]})
    env.ns.update(
        meshlib=meshlib,
        users_client=meshlib.MeshClient(discovery=discovery),
        orders_client=meshlib.MeshClient(discovery=discovery),
        client=meshlib.AsyncMeshClient(discovery=discovery),
        token="s3cret",
        run_app=lambda: None,
    )


# -- running a block ---------------------------------------------------------------------------


_CLEAN_PREFIXES = ("MESH_", "CONSUL_", "OTEL_")


@contextlib.contextmanager
def _saved_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _execute(block: Block, ns: dict[str, Any]) -> None:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(block.code, f"{block.path.relative_to(ROOT)}:{block.line}", "exec", flags=flags)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, ns))
    else:
        exec(code, ns)


def _chain(block: Block) -> list[Block]:
    """The block, after the blocks it continues (``continue``), first one first."""
    page = [b for b in ALL_BLOCKS if b.path == block.path]
    chain = [block]
    while chain[0].directive[:1] == ("continue",):
        assert chain[0].index > 0, f"{chain[0].id}: 'continue' on a page's first Python block"
        chain.insert(0, page[chain[0].index - 1])
    return chain


def _call_tests(ns: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """Call the ``test_*`` functions a block defined, with pytest fixtures as arguments."""
    for name, fn in list(ns.items()):
        if not (name.startswith("test_") and inspect.isfunction(fn)):
            continue
        if fn.__module__ != ns["__name__"]:
            continue
        kwargs = {p: request.getfixturevalue(p) for p in inspect.signature(fn).parameters}
        result = fn(**kwargs)
        if inspect.iscoroutine(result):
            asyncio.run(result)


def _close_clients(ns: dict[str, Any]) -> None:
    for value in list(ns.values()):
        if isinstance(value, httpx.Client) and not value.is_closed:
            value.close()
        elif isinstance(value, httpx.AsyncClient) and not value.is_closed:
            asyncio.run(value.aclose())


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_doc_block(
    block: Block, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if block.skipped:
        pytest.skip(" ".join(block.directive[1:]) or "marked doc-test: skip")
    chain = _chain(block)
    words = list(dict.fromkeys(w for part in chain for w in part.directive if w != "continue"))
    unknown = [w for w in words if w not in SETUPS]
    assert not unknown, f"{block.id}: unknown doc-test setup(s) {unknown}; known: {sorted(SETUPS)}"
    for name in list(os.environ):
        if name.startswith(_CLEAN_PREFIXES):
            monkeypatch.delenv(name)
    ns: dict[str, Any] = {"__name__": "docs_block"}
    with _saved_environ(), contextlib.ExitStack() as stack:
        env = Env(ns, monkeypatch, stack)
        for word in words:
            SETUPS[word](env)
        try:
            for part in chain:
                _execute(part, ns)
            _call_tests(ns, request)
        finally:
            _close_clients(ns)
        for check in env.checks:
            check()


# -- the suite itself --------------------------------------------------------------------------


def test_blocks_are_found() -> None:
    pages = {b.path.name for b in ALL_BLOCKS}
    assert {"README.md", "getting-started.md", "exceptions.md"} <= pages


def test_few_blocks_are_skipped() -> None:
    skipped = [b.id for b in ALL_BLOCKS if b.skipped]
    assert len(skipped) < MAX_SKIPPED_SHARE * len(ALL_BLOCKS), skipped


def test_external_directives_match_one_block_each() -> None:
    for name, entries in EXTERNAL_DIRECTIVES.items():
        blocks = extract_blocks(ROOT / name if name == "README.md" else DOCS / name)
        for needle, _ in entries:
            hits = [b.id for b in blocks if needle in b.code]
            assert len(hits) == 1, f"{name}: {needle!r} is in {len(hits)} blocks: {hits}"


def test_every_page_is_in_the_nav() -> None:
    nav = re.findall(r"^\s*-\s*[^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(nav) == pages
