"""Two services that find each other through Consul: a FastAPI "frontend" and a Flask "catalog".

* ``catalog`` is a Flask (WSGI) service run as several instances; each one announces itself in
  Consul with the sync ``meshlib.Registrar`` (see run.py) and answers ``GET /items/<id>`` with
  the item, its own instance name and the deadline it received from its caller;
* ``frontend`` is a FastAPI (ASGI) service that registers itself through its lifespan
  (``meshlib.consul_lifespan``) and calls ``http://catalog/items/<id>`` through a
  ``meshlib.AsyncMeshClient``: the client resolves ``catalog`` in Consul (a blocking-query watch)
  and picks an instance per request with P2C Peak-EWMA.

Both are configured the way a deployment would configure them, from ``MESH_*`` and
``CONSUL_HTTP_ADDR`` variables, here given as a mapping to ``meshlib.MeshConfig.from_env`` so
the example never touches the process environment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import flask
from fastapi import FastAPI, HTTPException

import meshlib

ITEMS: dict[str, str] = {"1": "espresso cup", "2": "milk jug", "3": "tamper"}
"""What the catalog sells (every instance has the same data)."""

CATALOG_WORK_S = 0.005
"""Each catalog request sleeps this long, standing in for a database lookup."""


def config_for(env: Mapping[str, str]) -> meshlib.MeshConfig:
    """A service's configuration, read from ``env`` exactly as from ``os.environ``."""
    return meshlib.MeshConfig.from_env(env)


def create_catalog(instance: str) -> flask.Flask:
    """One catalog instance (Flask). It makes no outbound calls, so it needs no mesh client."""
    app = flask.Flask(f"catalog-{instance}")

    @app.get("/items/<item_id>")
    def item(item_id: str) -> tuple[dict[str, Any], int]:
        time.sleep(CATALOG_WORK_S)
        if item_id not in ITEMS:
            return {"error": "no such item", "served_by": instance}, 404
        return {
            "id": item_id,
            "name": ITEMS[item_id],
            "served_by": instance,
            # Set by the frontend's mesh client: what is left of the frontend caller's budget.
            "deadline_ms": flask.request.headers.get(meshlib.DEADLINE_HEADER),
        }, 200

    # Reads x-mesh-deadline-ms, so outbound mesh calls made here would inherit the deadline.
    app.wsgi_app = meshlib.MeshWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def create_frontend(config: meshlib.MeshConfig) -> FastAPI:
    """The frontend (FastAPI): registered in Consul while it serves, calls ``catalog``.

    ``config`` must carry the registration (``MESH_SERVICE_NAME``/``MESH_SERVICE_PORT``) and
    Consul discovery (``CONSUL_HTTP_ADDR``, ``MESH_DISCOVERY=consul``).
    """
    if config.registration is None:
        raise meshlib.ConfigError("the frontend needs MESH_SERVICE_NAME and MESH_SERVICE_PORT")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Registered in Consul for as long as the app serves; deregistered at shutdown, which is
        # how uvicorn handles SIGTERM. The mesh client is closed at shutdown too.
        async with (
            meshlib.consul_lifespan(config.registration, config.consul)(app),
            meshlib.AsyncMeshClient(config=config, timeout=5.0) as client,
        ):
            app.state.client = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/products/{item_id}")
    async def product(item_id: str) -> dict[str, Any]:
        client: meshlib.AsyncMeshClient = app.state.client
        r = await client.get(f"http://catalog/items/{item_id}")
        if r.status_code == 404:
            raise HTTPException(status_code=404, detail=f"no product {item_id}")
        r.raise_for_status()
        item = r.json()
        return {
            "product": item["name"],
            "served_by": item["served_by"],
            "catalog_saw_deadline_ms": item["deadline_ms"],
        }

    @app.get("/mesh")
    async def mesh() -> dict[str, Any]:
        """What this frontend's mesh knows about its dependencies (``client.mesh_state()``)."""
        client: meshlib.AsyncMeshClient = app.state.client
        return client.mesh_state()

    # An incoming x-mesh-deadline-ms caps the frontend's calls to the catalog.
    app.add_middleware(meshlib.MeshASGIMiddleware)
    return app
