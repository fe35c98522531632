"""``python -m meshlib.testing.fake_consul`` and the pytest fixtures work as documented."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

pytest_plugins = ["pytester"]


def test_command_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.testing.fake_consul", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        url = match.group(0)
        assert f"CONSUL_HTTP_ADDR=127.0.0.1:{match.group(1)}" in line
        assert httpx.get(url + "/v1/status/leader").json() == "127.0.0.1:8300"
        r = httpx.put(url + "/v1/agent/service/register", json={"Name": "web"})
        assert r.status_code == 200
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_command_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshlib.testing.fake_consul", "--acl-token", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "TOKEN=read|write" in result.stderr


def test_fixtures(pytester: pytest.Pytester) -> None:
    # Importing the fixtures in a conftest works whether or not the plugin is also registered
    # through its entry point (conftest fixtures take precedence over plugin ones).
    pytester.makeconftest(
        "from meshlib.testing.pytest_plugin import fake_consul, fake_consul_env  # noqa: F401\n"
    )
    pytester.makepyfile(
        """
        import os

        import consul
        import httpx


        def test_server(fake_consul):
            r = httpx.get(fake_consul.url + "/v1/catalog/services")
            assert r.json() == {"consul": []}
            pytest_port = fake_consul.port
            assert fake_consul.http_addr == f"127.0.0.1:{pytest_port}"


        def test_env(fake_consul_env):
            assert os.environ["CONSUL_HTTP_ADDR"] == fake_consul_env.http_addr
            assert "CONSUL_HTTP_TOKEN" not in os.environ
            c = consul.Consul()  # configured from the environment alone
            assert c.agent.service.register("web") is True
            assert [e["Service"]["ID"] for e in c.health.service("web")[1]] == ["web"]
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=2)
