"""What a subset filter can see of an endpoint: the fields meshlib carries of an instance.

Consul evaluates a resolver's subset filter against each health entry (``Node``, ``Service``,
``Checks``). meshlib keeps the service half of an instance and its node's metadata, so the
selectors it can evaluate are ``Service.ID``, ``Service.Service``, ``Service.Tags``,
``Service.Meta``, ``Service.Address``, ``Service.Port`` and ``Node.Meta``; a filter naming any
other is refused when the chain is read (and reported), rather than silently matching nothing.
"""

from __future__ import annotations

from typing import Any

from meshlib.endpoint import Endpoint
from meshlib.traffic.bexpr import INT, STRING, ListOf, MapOf, Struct

__all__ = ["SUBSET_SCHEMA", "endpoint_view"]

SUBSET_SCHEMA = Struct(
    {
        "Service": Struct(
            {
                "ID": STRING,
                "Service": STRING,
                "Tags": ListOf(STRING),
                "Meta": MapOf(STRING),
                "Address": STRING,
                "Port": INT,
            }
        ),
        "Node": Struct({"Meta": MapOf(STRING)}),
    }
)


def endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    """The endpoint as the filter evaluator walks it (the shape of a health entry)."""
    return {
        "Service": {
            "ID": endpoint.meta.get("mesh-service-id", ""),
            "Service": "",
            "Tags": list(endpoint.tags),
            "Meta": dict(endpoint.meta),
            "Address": endpoint.host,
            "Port": endpoint.port,
        },
        "Node": {"Meta": dict(endpoint.node_meta)},
    }
