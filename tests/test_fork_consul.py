"""After ``os.fork()``, the child's Consul watches start afresh instead of staying frozen.

The watch thread does not survive a fork: without care the child keeps serving the endpoints it
inherited, never sees a change (``stale=False`` while the parent follows it), and ``close()``
waits on a loop that no longer runs. A real fork, FakeConsul in the parent process.
"""

from __future__ import annotations

import json
import os
import time

import pytest

import meshlib
from meshlib.discovery.base import Target
from meshlib.testing import FakeConsul

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _ports(d: meshlib.ConsulDiscovery) -> list[int]:
    res = d.lookup(Target("users"))
    return [] if res is None else sorted(e.port for e in res.endpoints)


def _child(d: meshlib.ConsulDiscovery) -> dict[str, object]:
    # The parent registers a second instance right after the fork: the child must see it.
    end = time.monotonic() + 5.0
    seen = _ports(d)
    while seen != [8001, 8002] and time.monotonic() < end:
        time.sleep(0.02)
        seen = _ports(d)
    start = time.monotonic()
    d.close()
    return {"seen": seen, "close_s": time.monotonic() - start}


def test_child_watches_afresh_and_closes_quickly(fake_consul: FakeConsul) -> None:
    fake_consul.register_service("users", service_id="u1", address="127.0.0.1", port=8001)
    settings = meshlib.ConsulSettings(host="127.0.0.1", port=fake_consul.port)
    d = meshlib.ConsulDiscovery(settings)
    try:
        first = d.resolve_sync(Target("users"))
        assert first is not None
        assert [e.port for e in first.endpoints] == [8001]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report on the pipe, then leave without the parent's cleanup
            code = 1
            try:
                os.write(w, json.dumps(_child(d)).encode())
                code = 0
            except BaseException as exc:
                os.write(w, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(w)
        fake_consul.register_service("users", service_id="u2", address="127.0.0.1", port=8002)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        report = json.loads(data or b"{}")
        assert os.waitstatus_to_exitcode(status) == 0, report
        assert report["seen"] == [8001, 8002], report
        assert report["close_s"] < 2.0, report
        # The parent's own watch kept working through the fork.
        end = time.monotonic() + 5.0
        while _ports(d) != [8001, 8002]:
            assert time.monotonic() < end, _ports(d)
            time.sleep(0.02)
    finally:
        d.close()
