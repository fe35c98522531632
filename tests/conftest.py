"""Shared fixtures: real upstream servers on 127.0.0.1, started and stopped per test."""

from collections.abc import AsyncIterator, Iterator

import pytest

from meshlib.upstream import Upstream, UpstreamBehaviour, UpstreamThread


@pytest.fixture
async def upstreams() -> AsyncIterator[list[Upstream]]:
    """Three healthy upstreams in the test's event loop: a, b, c."""
    servers = [Upstream(UpstreamBehaviour(name=n, seed=i)) for i, n in enumerate("abc")]
    for s in servers:
        await s.start()
    try:
        yield servers
    finally:
        for s in servers:
            await s.stop()


@pytest.fixture
def upstream_threads() -> Iterator[list[UpstreamThread]]:
    """Three healthy upstreams on background threads, for sync clients: a, b, c."""
    servers = [UpstreamThread(UpstreamBehaviour(name=n, seed=i)) for i, n in enumerate("abc")]
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()
