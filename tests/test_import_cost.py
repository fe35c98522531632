"""``import meshlib`` loads only what a first request needs: not py-consul (nor the ``requests``
it imports) until Consul is used, not tomllib until a TOML endpoints file is read."""

import subprocess
import sys

from meshlib.testing import FakeConsul

_LAZY = ("consul", "requests", "tomllib")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport sys\nprint(' '.join(str(m in sys.modules) for m in {_LAZY!r}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(zip(_LAZY, (w == "True" for w in out.stdout.split()), strict=True))


def test_import_meshlib_loads_neither_py_consul_nor_requests_nor_tomllib() -> None:
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
