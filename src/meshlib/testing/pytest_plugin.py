"""pytest fixtures for testing against meshlib's FakeConsul.

``fake_consul`` is a started ``FakeConsul`` on a free port, stopped after the test.
``fake_consul_env`` is the same server with ``CONSUL_HTTP_ADDR`` pointing at it and the other
``CONSUL_*`` variables that would redirect a client (TLS, tokens, namespaces, ...) removed, so
code that configures itself from the environment talks to the fake and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlib.testing.fake_consul import FakeConsul

__all__ = ["fake_consul", "fake_consul_env"]

# Variables that would make a client use TLS, credentials or an Enterprise namespace, none of
# which the plain-HTTP OSS fake offers.
_CONFLICTING_ENV = (
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_HTTP_AUTH",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
    "CONSUL_NAMESPACE",
    "CONSUL_PARTITION",
)


@pytest.fixture
def fake_consul() -> Iterator[FakeConsul]:
    """A running FakeConsul (random port, real clock), stopped when the test ends."""
    with FakeConsul() as consul:
        yield consul


@pytest.fixture
def fake_consul_env(fake_consul: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> FakeConsul:
    """``fake_consul`` plus ``CONSUL_HTTP_ADDR=127.0.0.1:<port>`` in the environment."""
    for name in _CONFLICTING_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", fake_consul.http_addr)
    return fake_consul
