"""Inbound admission end to end for WSGI: a threaded wsgiref server on 127.0.0.1.

Refusals are answered by the worker thread at once (it never waits for a token or a slot), an
admitted request holds its slot until the server closes the body, and a meshlib ``MeshClient``
sharing the manual clock retries after the ``Retry-After`` it is given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

import meshlib
from _inbound_servers import wsgi_server
from meshlib.clock import ManualClock
from meshlib.limit import AdmissionPolicy


class App:
    """Counts calls; ``/slow`` waits (its own choice, bounded) until ``release``; ``/boom``
    raises; ``/stream`` yields three chunks."""

    def __init__(self) -> None:
        self.calls = 0
        self.inside = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        with self._lock:
            self.calls += 1
        path = environ["PATH_INFO"]
        if path == "/boom":
            raise RuntimeError("the application failed")
        if path == "/slow":
            with self._lock:
                self.inside += 1
            self.release.wait(10)
            with self._lock:
                self.inside -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        if path == "/stream":
            return iter([b"a", b"b", b"c"])
        return iter([b"ok"])


def _wait_for(cond: Any) -> None:
    for _ in range(1000):  # at most 10 s
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached within 10 s")


def test_wsgi_rate_limit_429_and_meshlib_client_retries_after_retry_after() -> None:
    app, clock = App(), ManualClock()
    mw = meshlib.MeshWSGIMiddleware(app, admission=AdmissionPolicy(rate=2, burst=2), clock=clock)
    with wsgi_server(mw) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as plain:
            codes = [plain.get("/").status_code for _ in range(3)]
            refused = plain.get("/")
        with meshlib.MeshClient(
            discovery=meshlib.StaticDiscovery({"inbound": [f"127.0.0.1:{port}"]}), clock=clock
        ) as client:
            retried = client.get("http://inbound/")
    assert codes == [200, 200, 429]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-mesh-rejected"] == "rate"
    assert retried.status_code == 200
    assert max(clock.slept) >= 0.5  # the client waited for the next token on the shared clock
    assert app.calls == 3


def test_wsgi_concurrency_limit_refuses_at_once_without_parking_a_thread() -> None:
    app = App()
    mw = meshlib.MeshWSGIMiddleware(app, admission=AdmissionPolicy(max_in_flight=2))
    with wsgi_server(mw) as port:
        base = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(2) as pool:
            slow = [
                pool.submit(httpx.get, f"{base}/slow", trust_env=False, timeout=10)
                for _ in range(2)
            ]
            _wait_for(lambda: app.inside == 2)
            started = time.perf_counter()
            refused = httpx.get(f"{base}/", trust_env=False)
            elapsed = time.perf_counter() - started
            app.release.set()
            done = [f.result() for f in slow]
        after = httpx.get(f"{base}/stream", trust_env=False)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert elapsed < 5.0  # no slot could free before the release below: it did not wait
    assert [r.status_code for r in done] == [200, 200]
    assert after.text == "abc"
    assert app.calls == 3
    _wait_for(lambda: mw.gate.admission.in_flight == 0)  # the streamed body's close freed it


def test_wsgi_app_failure_frees_its_slot_and_expired_deadline_never_reaches_the_app() -> None:
    app = App()
    mw = meshlib.MeshWSGIMiddleware(app, admission=AdmissionPolicy(max_in_flight=1))
    with wsgi_server(mw) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            boom = client.get("/boom")
            shed = client.get("/", headers={"x-mesh-deadline-ms": "0"})
            ok = client.get("/")
    assert boom.status_code == 500  # wsgiref's answer to an application error
    assert shed.status_code == 504
    assert shed.headers["x-mesh-rejected"] == "deadline"
    assert ok.status_code == 200  # the failed request gave its only slot back
    assert app.calls == 2
    assert mw.gate.admission.snapshot()["shed"] == {"deadline": 1}
