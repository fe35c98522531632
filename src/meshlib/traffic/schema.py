"""What a subset filter can see of an endpoint: the ``Service`` fields meshlib carries.

Consul evaluates a resolver's subset filter against each health entry (``Node``, ``Service``,
``Checks``). meshlib keeps only the service half of an instance, so the selectors it can
evaluate are ``Service.ID``, ``Service.Service``, ``Service.Tags``, ``Service.Meta``,
``Service.Address`` and ``Service.Port``; a filter naming any other is refused when the chain
is read (and reported), rather than silently matching nothing.
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
        )
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
        }
    }
