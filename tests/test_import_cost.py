"""``import meshlib`` loads only what a first request needs: not py-consul (nor the ``requests``
it imports) until Consul is used, not tomllib until a TOML endpoints file is read, not asyncio
for a sync service, not OpenTelemetry until something in the process uses it, and not the
traffic-management machinery until a discovery chain is found; nor tenacity before the first
retry, nor what only a server, a Consul mesh or Connect needs (the inbound middleware and its
admission, the Consul watches and registration, Connect's identities): on CPython 3.11 each
dataclass among them costs half a millisecond or more of every cold start."""

import subprocess
import sys

from meshlib.testing import FakeConsul
from meshlib.upstream import UpstreamBehaviour, UpstreamThread

_LAZY = (
    "consul",
    "requests",
    "tomllib",
    "asyncio",
    "opentelemetry",
    "meshlib.traffic",
    "tenacity",
    "meshlib.middleware.gate",
    "meshlib.limit.admission",
    "meshlib.consul.watches",
    "meshlib.consul.service",
    "meshlib.consul.parse",
    "meshlib.connect.identity",
    "concurrent.futures",
)


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport sys\nprint(' '.join(str(m in sys.modules) for m in {_LAZY!r}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(zip(_LAZY, (w == "True" for w in out.stdout.split()), strict=True))


def test_import_meshlib_loads_none_of_the_lazy_packages() -> None:
    assert _loaded_after("import meshlib") == dict.fromkeys(_LAZY, False)


def test_py_consul_is_loaded_once_consul_discovery_is_used(fake_consul: FakeConsul) -> None:
    fake_consul.register_service("users", service_id="u0", address="127.0.0.1", port=8001)
    code = (
        "import meshlib\n"
        "from meshlib.discovery.base import Target\n"
        f"s = meshlib.ConsulSettings(host='127.0.0.1', port={fake_consul.port})\n"
        "d = meshlib.ConsulDiscovery(s)\n"
        "assert [e.port for e in d.resolve_sync(Target('users')).endpoints] == [8001]\n"
        "d.close()"
    )
    assert _loaded_after(code)["consul"] is True


def test_a_sync_call_without_opentelemetry_imports_neither_it_nor_asyncio() -> None:
    with UpstreamThread(UpstreamBehaviour(name="a")) as up:
        code = (
            "import meshlib\n"
            f"d = meshlib.StaticDiscovery({{'users': ['127.0.0.1:{up.port}']}})\n"
            "with meshlib.MeshClient(discovery=d) as c:\n"
            "    assert c.get('http://users/').status_code == 200\n"
            f"    assert c.get('http://127.0.0.1:{up.port}/').status_code == 200\n"
        )
        loaded = _loaded_after(code)
    assert loaded["opentelemetry"] is False
    assert loaded["asyncio"] is False


def test_telemetry_starts_once_opentelemetry_is_set_up_later() -> None:
    with UpstreamThread(UpstreamBehaviour(name="a")) as up:
        code = (
            "import sys, meshlib\n"
            f"d = meshlib.StaticDiscovery({{'users': ['127.0.0.1:{up.port}']}})\n"
            "c = meshlib.MeshClient(discovery=d)\n"
            "assert c.get('http://users/').status_code == 200\n"
            "assert 'opentelemetry' not in sys.modules\n"
            "from opentelemetry import trace\n"
            "from opentelemetry.sdk.trace import TracerProvider\n"
            "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
            "from opentelemetry.sdk.trace.export.in_memory_span_exporter import (\n"
            "    InMemorySpanExporter)\n"
            "exporter = InMemorySpanExporter()\n"
            "provider = TracerProvider()\n"
            "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
            "trace.set_tracer_provider(provider)\n"
            "r = c.get('http://users/echo')\n"
            "assert 'traceparent' in r.json()['headers'], r.json()\n"
            "names = sorted(s.name for s in exporter.get_finished_spans())\n"
            "assert names == ['GET', 'mesh users'], names\n"
            "c.close()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_first_call_needs_no_inbound_consul_or_connect_machinery_nor_tenacity() -> None:
    """The laziness is real, not moved to the first client: a static-discovery call that
    succeeds at once loads none of them either."""
    with UpstreamThread(UpstreamBehaviour(name="a")) as up:
        code = (
            "import meshlib\n"
            f"with meshlib.MeshClient(config=meshlib.MeshConfig.from_env("
            f"{{'MESH_STATIC_ENDPOINTS': 'users=127.0.0.1:{up.port}'}})) as c:\n"
            "    assert c.get('http://users/').status_code == 200\n"
        )
        loaded = _loaded_after(code)
    for name in (
        "tenacity",
        "meshlib.middleware.gate",
        "meshlib.consul.watches",
        "meshlib.consul.service",
        "meshlib.connect.identity",
    ):
        assert loaded[name] is False, name


def test_tenacity_is_loaded_by_the_first_retry() -> None:
    code = (
        "import random, meshlib\n"
        "from meshlib.retry.policy import RetryPolicy, backoff_delay\n"
        "assert 0 <= backoff_delay(RetryPolicy(), 2, random.Random(1)) <= 0.05\n"
    )
    assert _loaded_after(code)["tenacity"] is True
