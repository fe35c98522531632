"""The exceptions meshlib raises, each a subclass of the httpx exception a caller already catches.

Existing ``except httpx.RequestError`` / ``except httpx.ConnectError`` handlers keep working when a
service moves its outbound calls onto meshlib, so every mesh failure is also the httpx failure it
most resembles: no endpoint to talk to is a connection failure, an expired deadline is a timeout.
``MeshError`` is the common base for code that wants to tell mesh decisions apart.
"""

from __future__ import annotations

import httpx

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "DiscoveryError",
    "MeshError",
    "NoEndpointsAvailable",
    "RateLimited",
    "not_under_asyncio",
]


class MeshError(Exception):
    """Base of every error meshlib raises on its own account (not the upstream's)."""


class NoEndpointsAvailable(MeshError, httpx.ConnectError):
    """A mesh service resolved to no usable endpoint, so nothing could be connected to."""


class DeadlineExceeded(MeshError, httpx.TimeoutException):
    """The call's total deadline expired (its own, ``@outbound``'s, or the incoming request's)."""


class RateLimited(MeshError, httpx.TransportError):
    """A per-service rate or concurrency limit refused the call before it was sent."""


class DiscoveryError(MeshError, httpx.TransportError):
    """The service registry could not answer and no last known good endpoints exist."""


class ConfigError(MeshError, ValueError):
    """A setting is invalid: the message names the variable, the value and what is accepted."""


def not_under_asyncio(service: str) -> ConfigError:
    """The error for an async mesh call made outside a running asyncio event loop (under trio,
    say): the pipeline's limits, backoff and discovery, and meshlib's engine, run on asyncio."""
    return ConfigError(
        f"meshlib.AsyncMeshClient needs a running asyncio event loop, and this call to "
        f"{service!r} has none (trio or another async library?). Run it under "
        "asyncio, or call the service from a worker thread with the sync meshlib.MeshClient "
        "(for trio: trio.to_thread.run_sync); see docs/migrating.md."
    )
