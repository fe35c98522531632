"""The admin endpoint: what the mesh knows, for operators (JSON, Prometheus text, a dashboard).

``server`` runs the endpoint (in the application's loop or on a thread), ``http`` answers its
requests, ``metrics`` renders Prometheus text, ``page.html`` is the dashboard. An L4 entry
package: it imports ``config`` and the layers below, and nothing imports it but ``cli``.
"""

from meshlib.admin.server import (
    DEFAULT_ADMIN_ADDR,
    AdminHandle,
    AdminServer,
    MeshStateSource,
    merged_state,
    parse_admin_addr,
    serve_admin_from_config,
    start_admin,
    start_admin_from_config,
)

__all__ = [
    "DEFAULT_ADMIN_ADDR",
    "AdminHandle",
    "AdminServer",
    "MeshStateSource",
    "merged_state",
    "parse_admin_addr",
    "serve_admin_from_config",
    "start_admin",
    "start_admin_from_config",
]
