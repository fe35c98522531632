"""A tiny service under test: ``GET /greeting/{uid}`` looks the user up in the ``users`` service.

This is the code a meshlib user writes, kept small so that ``test_app.py`` (next to it) can show
how to test it with ``meshlib.testing``. The service calls ``http://users/v1/users/{uid}``
through a ``meshlib.AsyncMeshClient`` configured from the environment: with
``CONSUL_HTTP_ADDR`` set it finds ``users`` in Consul, so a test only has to point that variable
at a ``FakeConsul`` and register a real upstream in it. Nothing in this file knows about tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException

import meshlib

USERS = "http://users"


@meshlib.outbound(timeout=5.0, idempotent=True)
async def fetch_user(client: httpx.AsyncClient, uid: int) -> dict[str, Any] | None:
    """The user ``uid`` from the users service, or None if it has no such user.

    Five seconds in all for the call and its retries; a reset or a 503 is retried on another
    instance of ``users`` (meshlib's defaults: 3 attempts, under the retry budget).
    """
    r = await client.get(f"{USERS}/v1/users/{uid}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    user: dict[str, Any] = r.json()
    return user


def create_app(client: meshlib.AsyncMeshClient | None = None) -> FastAPI:
    """The service. Pass ``client`` to inject one (tests do, to give it a ``ManualClock``);
    otherwise the app builds one from ``MESH_*``/``CONSUL_*`` at startup and closes it at
    shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is not None:
            app.state.users = client
            yield
            return
        async with meshlib.AsyncMeshClient(timeout=2.0) as own:
            app.state.users = own
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/greeting/{uid}")
    async def greeting(uid: int) -> dict[str, str]:
        try:
            user = await fetch_user(app.state.users, uid)
        except httpx.HTTPStatusError as exc:
            raise HTTPException(503, f"users answered {exc.response.status_code}") from exc
        except httpx.TransportError as exc:  # includes timeouts and meshlib.DeadlineExceeded
            raise HTTPException(503, f"users unreachable: {type(exc).__name__}") from exc
        if user is None:
            raise HTTPException(404, f"no user {uid}")
        return {"greeting": f"Hello, {user['name']}!"}

    app.add_middleware(meshlib.MeshASGIMiddleware)
    return app
