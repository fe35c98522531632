"""The server of the ``inbound-limit`` scenario: a small app behind meshlib's inbound middleware.

``python -m benchmarks.inbound_server --kind asgi|wsgi --port N [--rate R] [--burst B]`` serves
``200 ok`` on 127.0.0.1:N, wrapped in ``MeshASGIMiddleware`` (uvicorn, one process, its default
HTTP parser) or ``MeshWSGIMiddleware`` (the same uvicorn front end with its WSGI interface,
which runs the app on a pool of threads). Without ``--rate`` the middleware admits everything,
which is the baseline. The worker that measures starts this process and stops it by its pid.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any

import meshlib

__all__ = ["main"]


async def _asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inbound_server")
    p.add_argument("--kind", choices=("asgi", "wsgi"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--burst", type=float, default=None)
    args = p.parse_args(argv)
    policy = meshlib.AdmissionPolicy(rate=args.rate, burst=args.burst)
    import uvicorn

    app: Any
    if args.kind == "asgi":
        app = meshlib.MeshASGIMiddleware(_asgi_app, admission=policy)
    else:
        # uvicorn's WSGI interface runs the WSGI app on a pool of threads behind the same
        # keep-alive HTTP/1.1 front end; werkzeug's development server closes every connection
        # and would measure its own accept loop rather than the middleware.
        warnings.simplefilter("ignore", DeprecationWarning)
        app = meshlib.MeshWSGIMiddleware(_wsgi_app, admission=policy)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        interface="asgi3" if args.kind == "asgi" else "wsgi",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
