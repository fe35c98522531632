"""Three services in a chain, A -> meshlib -> B -> meshlib -> C, showing one trace end to end.

* A is a FastAPI service (FastAPI traces its own requests) behind meshlib's ASGI middleware;
* B is a Flask (WSGI) service with only meshlib's WSGI middleware: with no server span of its
  own, the middleware continues the caller's trace from ``traceparent``;
* C is a Starlette service behind OpenTelemetry's ASGI instrumentation and meshlib's ASGI
  middleware: the two coexist, with one server span and the caller's deadline carried on.

A calls B and B calls C by service name (``http://b/work``, ``http://c/work``) through meshlib's
clients, so every hop gets a mesh span, a ``traceparent`` and the remaining deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import flask
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import meshlib


def create_a(discovery: meshlib.Discovery) -> Any:
    """Service A: FastAPI, calls B."""
    client = meshlib.AsyncMeshClient(discovery=discovery, timeout=5.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()  # close pooled connections when the server stops

    app = FastAPI(lifespan=lifespan)

    @app.get("/work")
    async def work() -> dict[str, Any]:
        r = await client.get("http://b/work")
        return {"service": "a", "next": r.json()}

    return meshlib.MeshASGIMiddleware(app)


def create_b(discovery: meshlib.Discovery) -> Any:
    """Service B: Flask (sync), calls C."""
    app = flask.Flask("b")
    client = meshlib.MeshClient(discovery=discovery, timeout=5.0)
    app.extensions["mesh_client"] = client  # closed by whoever stops the server

    @app.get("/work")
    def work() -> dict[str, Any]:
        r = client.get("http://c/work")
        return {
            "service": "b",
            "deadline_ms": flask.request.headers.get(meshlib.DEADLINE_HEADER),
            "next": r.json(),
        }

    app.wsgi_app = meshlib.MeshWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def create_c() -> Any:
    """Service C: Starlette under OpenTelemetry's ASGI instrumentation, the end of the chain."""

    async def work(request: Request) -> JSONResponse:
        return JSONResponse({"service": "c"})

    app = Starlette(routes=[Route("/work", work)])
    return OpenTelemetryMiddleware(meshlib.MeshASGIMiddleware(app))
