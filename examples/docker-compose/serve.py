"""Container entry point: serve one service of examples/fastapi_flask_consul, configured by env.

``python serve.py catalog`` or ``python serve.py frontend``. Everything else comes from the
environment docker-compose.yml sets, as it would in any deployment: ``CONSUL_HTTP_ADDR`` (the
Consul agent), ``MESH_SERVICE_NAME`` / ``MESH_SERVICE_ID`` / ``MESH_SERVICE_PORT`` /
``MESH_SERVICE_ADDRESS`` (what to announce) and any other ``MESH_*`` setting.

The catalog registers with ``meshlib.Registrar`` (which also deregisters on SIGTERM, what
``docker compose stop`` sends); the frontend registers in its ASGI lifespan, which uvicorn runs
at startup and at SIGTERM. The services themselves are the ones the local example runs
(``examples/fastapi_flask_consul/services.py``), unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import meshlib

try:
    from examples.fastapi_flask_consul import services
except ImportError:  # run from this directory without the repository root on sys.path
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from examples.fastapi_flask_consul import services

ROLES = ("catalog", "frontend")


def build(role: str, environ: Mapping[str, str]) -> tuple[meshlib.MeshConfig, Any]:
    """The configuration and the app for ``role``, from ``environ`` (validated up front)."""
    if role not in ROLES:
        raise SystemExit(f"usage: serve.py {{{','.join(ROLES)}}}, got {role!r}")
    config = meshlib.MeshConfig.from_env(environ)
    if config.registration is None:
        raise meshlib.ConfigError(f"{role}: set MESH_SERVICE_NAME and MESH_SERVICE_PORT")
    if role == "catalog":
        return config, services.create_catalog(config.registration.service_id)
    return config, services.create_frontend(config)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    role = args[0] if args else ""
    config, app = build(role, os.environ)
    assert config.registration is not None
    port = config.registration.port
    if role == "catalog":
        from werkzeug.serving import make_server

        server = make_server("0.0.0.0", port, app, threaded=True)
        with meshlib.Registrar(config.registration, config.consul):
            print(f"catalog {config.registration.service_id} serving on :{port}", flush=True)
            server.serve_forever()
    else:
        import uvicorn

        uvicorn.run(app, host="0.0.0.0", port=port, lifespan="on")


if __name__ == "__main__":
    main()
