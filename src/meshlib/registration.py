"""Self-registration in Consul: announce this service, keep its check green, leave cleanly.

``Registrar`` (sync, a heartbeat thread) and ``AsyncRegistrar`` (async, a heartbeat task)
register the service with the local agent, keep a TTL check passing (or register an HTTP check
that Consul runs itself), set ``DeregisterCriticalServiceAfter`` so a crashed instance is reaped,
and deregister on exit. The sync registrar also deregisters on SIGTERM (then lets the signal do
what it would have done); ASGI servers turn SIGTERM into lifespan shutdown, which
``consul_lifespan`` handles. When a heartbeat is refused (the agent restarted and forgot the
service), the registrar registers again, so a Consul restart heals by itself.

Everything goes through py-consul on meshlib's httpx client, with the token from the
configuration (``CONSUL_HTTP_TOKEN_FILE`` first); nothing here ever logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from meshlib.consul_settings import ConsulSettings
from meshlib.discovery.consul_http import async_consul, sync_consul

__all__ = ["AsyncRegistrar", "Registrar", "ServiceRegistration", "consul_lifespan"]

log = logging.getLogger("meshlib.registration")


def _go_duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True, kw_only=True)
class ServiceRegistration:
    """What to announce (``MESH_SERVICE_*``)."""

    name: str
    port: int
    id: str | None = None
    address: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    weights: tuple[int, int] = (1, 1)
    check: str = "ttl"
    """``ttl`` (meshlib heartbeats), ``http`` (Consul polls ``http_url``) or ``none``."""
    ttl: float = 10.0
    http_url: str | None = None
    interval: float = 10.0
    deregister_after: float = 60.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("service name must not be empty (MESH_SERVICE_NAME)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"service port must be within [1, 65535], got {self.port}")
        if self.check not in ("ttl", "http", "none"):
            raise ValueError(f"check must be ttl, http or none, got {self.check!r}")
        if self.check == "http" and not (self.http_url or "").startswith(("http://", "https://")):
            raise ValueError("an http check needs http_url (MESH_SERVICE_CHECK_HTTP) as http(s)://")
        if self.ttl < 1.0:
            raise ValueError(f"check ttl must be at least 1s, got {self.ttl:g}s")
        if self.weights[0] < 1 or self.weights[1] < 0:
            raise ValueError(f"weights must be passing >= 1, warning >= 0, got {self.weights}")

    @property
    def service_id(self) -> str:
        return self.id or f"{self.name}-{self.address or 'local'}-{self.port}"

    @property
    def check_id(self) -> str:
        return f"service:{self.service_id}"

    def check_definition(self) -> dict[str, Any] | None:
        after = _go_duration(self.deregister_after)
        if self.check == "ttl":
            return {"TTL": _go_duration(self.ttl), "DeregisterCriticalServiceAfter": after}
        if self.check == "http":
            return {
                "HTTP": self.http_url,
                "Interval": _go_duration(self.interval),
                "DeregisterCriticalServiceAfter": after,
            }
        return None

    def register_kwargs(self) -> dict[str, Any]:
        """Arguments for py-consul's ``agent.service.register``."""
        return {
            "name": self.name,
            "service_id": self.service_id,
            "address": self.address or None,
            "port": self.port,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "weights": {"Passing": self.weights[0], "Warning": self.weights[1]},
            "check": self.check_definition(),
        }


class _Base:
    def __init__(self, registration: ServiceRegistration, settings: ConsulSettings) -> None:
        self.registration = registration
        self.settings = settings
        self.registered = False
        self.heartbeats = 0
        self.reregistrations = 0

    @property
    def period(self) -> float:
        """Heartbeat period: a third of the TTL, so two may be lost before the check fails."""
        return self.registration.ttl / 3.0

    def _log_registered(self, again: bool) -> None:
        r = self.registration
        log.info(
            "%s %s (%s) in Consul at %s",
            "re-registered" if again else "registered",
            r.name,
            r.service_id,
            self.settings.address,
            extra={"service": r.name},
        )


class Registrar(_Base):
    """Sync registration: ``with Registrar(reg, settings): serve()``."""

    def __init__(self, registration: ServiceRegistration, settings: ConsulSettings) -> None:
        super().__init__(registration, settings)
        self._consul = sync_consul(settings, timeout=10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None

    def register(self, *, again: bool = False) -> None:
        agent = self._consul.agent
        agent.service.register(**self.registration.register_kwargs())
        if self.registration.check == "ttl":
            agent.check.ttl_pass(self.registration.check_id)
        self.registered = True
        self._log_registered(again)

    def heartbeat(self) -> None:
        """Mark the TTL check passing; register again if the agent has forgotten us."""
        try:
            ok = self._consul.agent.check.ttl_pass(self.registration.check_id)
        except Exception:
            ok = False
        if ok:
            self.heartbeats += 1
            return
        try:
            self.register(again=True)
            self.reregistrations += 1
        except Exception as exc:
            log.warning("Consul heartbeat failed (%s); will retry", type(exc).__name__)

    def deregister(self) -> None:
        if not self.registered:
            return
        self.registered = False
        try:
            self._consul.agent.service.deregister(self.registration.service_id)
            log.info("deregistered %s", self.registration.service_id)
        except Exception as exc:
            log.warning("could not deregister %s: %s", self.registration.service_id, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            self.heartbeat()

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.deregister()
        previous = self._previous
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> Registrar:
        self.register()
        if self.registration.check == "ttl":
            self._thread = threading.Thread(
                target=self._beat, name="meshlib-heartbeat", daemon=True
            )
            self._thread.start()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if threading.current_thread() is threading.main_thread() and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        self.deregister()
        self._consul.http.close()


class AsyncRegistrar(_Base):
    """Async registration: ``async with AsyncRegistrar(reg, settings): ...``."""

    def __init__(self, registration: ServiceRegistration, settings: ConsulSettings) -> None:
        super().__init__(registration, settings)
        self._consul = async_consul(settings, timeout=10.0)
        self._task: asyncio.Task[None] | None = None

    async def register(self, *, again: bool = False) -> None:
        agent = self._consul.agent
        await agent.service.register(**self.registration.register_kwargs())
        if self.registration.check == "ttl":
            await agent.check.ttl_pass(self.registration.check_id)
        self.registered = True
        self._log_registered(again)

    async def heartbeat(self) -> None:
        try:
            ok = await self._consul.agent.check.ttl_pass(self.registration.check_id)
        except Exception:
            ok = False
        if ok:
            self.heartbeats += 1
            return
        try:
            await self.register(again=True)
            self.reregistrations += 1
        except Exception as exc:
            log.warning("Consul heartbeat failed (%s); will retry", type(exc).__name__)

    async def deregister(self) -> None:
        if not self.registered:
            return
        self.registered = False
        try:
            await self._consul.agent.service.deregister(self.registration.service_id)
            log.info("deregistered %s", self.registration.service_id)
        except Exception as exc:
            log.warning("could not deregister %s: %s", self.registration.service_id, exc)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self.heartbeat()

    async def __aenter__(self) -> AsyncRegistrar:
        await self.register()
        if self.registration.check == "ttl":
            self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.deregister()
        await self._consul.http.close()


def consul_lifespan(
    registration: ServiceRegistration, settings: ConsulSettings
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """An ASGI lifespan for Starlette/FastAPI (``FastAPI(lifespan=consul_lifespan(...))``):
    registered while the app serves, deregistered at shutdown (which is how ASGI servers
    handle SIGTERM)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with AsyncRegistrar(registration, settings):
            yield

    return lifespan
