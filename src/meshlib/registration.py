"""Self-registration from the configuration: ``Registrar``, ``AsyncRegistrar``, ``consul_lifespan``.

The registrars themselves live in ``meshlib.consul.registrar`` and take their registration and
Consul settings explicitly; the public classes here fill in whatever is not given from
``MeshConfig.from_env()`` (``MESH_SERVICE_*``, ``CONSUL_*``), since only the configuration layer
reads the environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from meshlib.config import MeshConfig
from meshlib.consul import registrar
from meshlib.consul.service import ServiceRegistration
from meshlib.consul.settings import ConsulSettings
from meshlib.errors import ConfigError

__all__ = ["AsyncRegistrar", "Registrar", "ServiceRegistration", "consul_lifespan"]


def _resolve(
    registration: ServiceRegistration | None, settings: ConsulSettings | None
) -> tuple[ServiceRegistration, ConsulSettings]:
    if registration is not None and settings is not None:
        return registration, settings
    config = MeshConfig.from_env()
    registration = registration or config.registration
    if registration is None:
        raise ConfigError(
            "no service to register: set MESH_SERVICE_NAME and MESH_SERVICE_PORT "
            "(or pass a ServiceRegistration)"
        )
    return registration, settings or config.consul


class Registrar(registrar.Registrar):
    """Sync registration: ``with Registrar(): serve()``.

    Without arguments, both come from ``MeshConfig.from_env()`` (``MESH_SERVICE_*``,
    ``CONSUL_*``).
    """

    def __init__(
        self,
        registration: ServiceRegistration | None = None,
        settings: ConsulSettings | None = None,
    ) -> None:
        super().__init__(*_resolve(registration, settings))


class AsyncRegistrar(registrar.AsyncRegistrar):
    """Async registration: ``async with AsyncRegistrar(): ...`` (defaults as for ``Registrar``)."""

    def __init__(
        self,
        registration: ServiceRegistration | None = None,
        settings: ConsulSettings | None = None,
    ) -> None:
        super().__init__(*_resolve(registration, settings))


def consul_lifespan(
    registration: ServiceRegistration | None = None, settings: ConsulSettings | None = None
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """An ASGI lifespan for Starlette/FastAPI (``FastAPI(lifespan=consul_lifespan(...))``):
    registered while the app serves, deregistered at shutdown (which is how ASGI servers
    handle SIGTERM)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with AsyncRegistrar(registration, settings):
            yield

    return lifespan
