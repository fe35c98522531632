"""The public transports: the pipeline configured from ``MeshConfig``, over meshlib's engine.

``AsyncMeshTransport`` / ``MeshTransport`` are what ``AsyncMeshClient`` / ``MeshClient`` mount
under everything, and what a user mounts into a client of their own
(``httpx.AsyncClient(transport=meshlib.AsyncMeshTransport())``). This entry module makes the
choices the pipeline leaves open: the configuration (``MeshConfig.from_env()`` by default), the
discovery it names, and the inner engine for mesh endpoints (``MESH_ENGINE``: meshlib's
HTTP/1.1 engine, or httpx's own transport), with httpx's ``verify``/``cert``/``trust_env``/
``limits`` passed through to both.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from meshlib.classify import Classifier
from meshlib.clock import SYSTEM_CLOCK, Clock
from meshlib.config import MeshConfig
from meshlib.discovery.base import Discovery
from meshlib.discovery.static import StaticDiscovery
from meshlib.engine.http11 import DEFAULT_LIMITS
from meshlib.errors import ConfigError
from meshlib.pipeline import AsyncMeshPipeline, MeshPipeline

if TYPE_CHECKING:
    from meshlib.identity import ConnectIdentity

__all__ = ["DEFAULT_LIMITS", "AsyncMeshTransport", "MeshTransport", "discovery_from_config"]


def discovery_from_config(config: MeshConfig, clock: Clock = SYSTEM_CLOCK) -> Discovery:
    """The discovery a configuration asks for."""
    if config.discovery == "consul":
        from meshlib.consul.discovery import ConsulDiscovery  # only when Consul is chosen

        options = config.consul_options
        if config.connect.enabled:
            options = dataclasses.replace(options, connect=True, connect_plain=config.connect.plain)
        return ConsulDiscovery(config.consul, options, clock=clock)
    return StaticDiscovery(
        config.static_endpoints,
        file=config.static_file,
        poll_interval=config.static_poll_interval,
        clock=clock,
        source="MESH_STATIC_ENDPOINTS",
    )


class _Configured:
    """The configured constructor both transports share: ``MeshConfig`` → pipeline settings."""

    _new_engine: Callable[..., Any]
    """meshlib's engine for this flavour, imported when built: the async one needs asyncio,
    which a sync service never imports, and an async service never needs the sync one."""
    _httpx_cls: type[Any]

    def __init__(
        self,
        *,
        config: MeshConfig | None = None,
        discovery: Discovery | None = None,
        classifier: Classifier | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: Any = None,
        passthrough: Any = None,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        connect: bool | None = None,
    ) -> None:
        config = config if config is not None else MeshConfig.from_env()
        if connect is not None and connect != config.connect.enabled:
            config = _with_connect(config, connect)
        owned = discovery is None
        if discovery is None:
            discovery = discovery_from_config(config, clock or SYSTEM_CLOCK)
        http: dict[str, Any] = {
            "verify": verify,
            "cert": cert,
            "trust_env": trust_env,
            "limits": limits,
        }
        httpx_cls: Any = self._httpx_cls
        if transport is not None:
            inner = transport
        elif config.engine == "fast":
            inner = self._new_engine(**http)
        else:
            inner = self._httpx_cls(**http)
        self.identity = _identity(config, inner)
        super().__init__(  # type: ignore[call-arg]
            config.pipeline_settings(),
            discovery=discovery,
            inner=inner,
            passthrough=passthrough or self._httpx_cls(**http),
            httpx_factory=functools.partial(httpx_cls, **http),
            owns_discovery=owned,
            classifier=classifier,
            clock=clock,
            rng=rng,
            connect=self.identity.client if self.identity is not None else None,
        )

    def mesh_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().mesh_state()  # type: ignore[misc]
        if self.identity is not None:
            state["connect"] = self.identity.state()
        return state


def _with_connect(config: MeshConfig, enabled: bool) -> MeshConfig:
    """``config`` with Connect turned on or off for one client (``connect=``)."""
    try:
        connect = dataclasses.replace(config.connect, enabled=enabled)
        return dataclasses.replace(config, connect=connect)
    except ConfigError as exc:
        raise ConfigError(f"connect={enabled}: {exc}") from None


def _identity(config: MeshConfig, inner: Any) -> ConnectIdentity | None:
    """The shared Connect identity when Connect is on, once the engine is known to do it."""
    if not config.connect.enabled:
        return None
    if not getattr(inner, "mesh_native", False):
        raise ConfigError(
            "MESH_CONNECT=true needs meshlib's own engine (MESH_ENGINE=fast, no custom "
            "transport=): it checks each server's SPIFFE identity per service called, which "
            "httpx's transport cannot"
        )
    from meshlib.identity import connect_identity  # py-consul and TLS only when Connect is on

    return connect_identity(config)


class AsyncMeshTransport(_Configured, AsyncMeshPipeline):
    """The async mesh transport, configured from ``config`` (default: ``MeshConfig.from_env()``)."""

    @staticmethod
    def _new_engine(**http: Any) -> Any:
        from meshlib.engine.aio import AsyncEngine

        return AsyncEngine(**http)

    _httpx_cls = httpx.AsyncHTTPTransport


class MeshTransport(_Configured, MeshPipeline):
    """The sync mesh transport, configured from ``config`` (default: ``MeshConfig.from_env()``)."""

    @staticmethod
    def _new_engine(**http: Any) -> Any:
        from meshlib.engine.sync import SyncEngine  # an async service never needs it

        return SyncEngine(**http)

    _httpx_cls = httpx.HTTPTransport
