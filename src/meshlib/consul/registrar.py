"""Self-registration in Consul: announce this service, keep its check green, leave cleanly.

``Registrar`` (sync, a heartbeat thread) and ``AsyncRegistrar`` (async, a heartbeat task)
register the service with the local agent, keep a TTL check passing (or register an HTTP check
that Consul runs itself), set ``DeregisterCriticalServiceAfter`` so a crashed instance is reaped,
and deregister on exit. The sync registrar also deregisters on SIGTERM (then lets the signal do
what it would have done); ASGI servers turn SIGTERM into lifespan shutdown, which
``consul_lifespan`` handles. When a heartbeat is refused (the agent restarted and forgot the
service), the registrar registers again, so a Consul restart heals by itself.

Everything goes through py-consul on meshlib's httpx client, with the token from the
configuration (``CONSUL_HTTP_TOKEN_FILE`` first); nothing here ever logs it. Both take their
registration and Consul settings explicitly; ``meshlib.Registrar`` (in ``meshlib.registration``)
fills them in from the environment. Registration is plumbing, not the application's work, so its
requests stay out of every trace: heartbeats run in ``otel.background_context()``, and
registering and deregistering suppress HTTP instrumentation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from meshlib.consul.service import ServiceRegistration
from meshlib.consul.settings import ConsulSettings
from meshlib.otel.gate import background_context
from meshlib.otel.gate import quiet as suppressed_http_instrumentation

if TYPE_CHECKING:  # asyncio is imported where it runs: a sync service never needs it
    import asyncio

__all__ = ["AsyncRegistrar", "Registrar"]

log = logging.getLogger("meshlib.registration")


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


class _SigtermHandler:
    """One SIGTERM handler for all sync registrars of the process, whatever order they leave in:
    installed when the first enters, the previous handler restored when the last exits."""

    def __init__(self) -> None:
        self._active: list[Registrar] = []
        self._previous: Any = None

    def add(self, registrar: Registrar) -> None:
        if not self._active:
            self._previous = signal.signal(signal.SIGTERM, self._on_term)
        self._active.append(registrar)

    def discard(self, registrar: Registrar) -> None:
        if registrar not in self._active:
            return
        self._active.remove(registrar)
        if not self._active:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        for registrar in list(self._active):
            registrar.deregister()
        previous = self._previous
        self._active.clear()
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        self._previous = None
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)


class Registrar(_Base):
    """Sync registration: ``with Registrar(reg, settings): serve()``."""

    def __init__(self, registration: ServiceRegistration, settings: ConsulSettings) -> None:
        super().__init__(registration, settings)
        from meshlib.consul.http import sync_consul  # py-consul only once registration is built

        self._consul = sync_consul(self.settings, timeout=10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, *, again: bool = False) -> None:
        agent = self._consul.agent
        with suppressed_http_instrumentation():  # never part of the caller's trace
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
            with suppressed_http_instrumentation():
                self._consul.agent.service.deregister(self.registration.service_id)
            log.info("deregistered %s", self.registration.service_id)
        except Exception as exc:
            log.warning("could not deregister %s: %s", self.registration.service_id, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            self.heartbeat()

    def __enter__(self) -> Registrar:
        self.register()
        if self.registration.check == "ttl":
            self._thread = threading.Thread(
                target=background_context().run,
                args=(self._beat,),
                name="meshlib-heartbeat",
                daemon=True,
            )
            self._thread.start()
        if threading.current_thread() is threading.main_thread():
            _SIGTERM.add(self)
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
        _SIGTERM.discard(self)
        self.deregister()
        self._consul.http.close()


class AsyncRegistrar(_Base):
    """Async registration: ``async with AsyncRegistrar(reg, settings): ...``."""

    def __init__(self, registration: ServiceRegistration, settings: ConsulSettings) -> None:
        super().__init__(registration, settings)
        from meshlib.consul.http import async_consul  # py-consul only once registration is built

        self._consul = async_consul(self.settings, timeout=10.0)
        self._task: asyncio.Task[None] | None = None

    async def register(self, *, again: bool = False) -> None:
        agent = self._consul.agent
        with suppressed_http_instrumentation():  # never part of the caller's trace
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
            with suppressed_http_instrumentation():
                await self._consul.agent.service.deregister(self.registration.service_id)
            log.info("deregistered %s", self.registration.service_id)
        except Exception as exc:
            log.warning("could not deregister %s: %s", self.registration.service_id, exc)

    async def _beat(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.period)
            await self.heartbeat()

    async def __aenter__(self) -> AsyncRegistrar:
        import asyncio

        await self.register()
        if self.registration.check == "ttl":
            self._task = asyncio.get_running_loop().create_task(
                self._beat(), context=background_context()
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.deregister()
        await self._consul.http.close()


_SIGTERM = _SigtermHandler()
