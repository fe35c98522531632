"""This process's Consul Connect identity, one per agent and service, shared by all who need it.

A service that calls others over Connect and serves Connect calls itself needs one leaf
certificate, not one per client: the agent issues a leaf per service, and every watch of it is a
blocking query held open on the agent. So ``connect_identity()`` hands every client and server
of a process the same ``ConnectIdentity`` for the same agent and service name, built on first
use, with its certificate watch started at once in the background (a client built at import
time does not wait for the agent; its first Connect connection does, bounded by the connect
timeout). What it holds:

* ``client``: the outbound side, a ``ConnectClient`` the mesh transports attach to every
  attempt to a Connect endpoint;
* ``server()``: the inbound side, a ``ConnectServer`` whose ``ssl_context`` any TLS server
  takes and whose ``authorize`` checks intentions; ``asgi(app)`` / ``wsgi(app)`` wrap an
  application in the intention middleware, and ``uvicorn_config(app)`` serves one with uvicorn;
* ``state()``: what ``mesh_state()`` and the admin endpoint show (identity, serial, expiry,
  rotations, the last error), never a key.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from meshlib.config import MeshConfig
from meshlib.connect.certs import Bundle, CertificateWatcher
from meshlib.connect.middleware import ConnectASGIMiddleware, ConnectWSGIMiddleware
from meshlib.connect.outbound import ConnectClient
from meshlib.connect.server import ConnectServer
from meshlib.consul.connect import ConnectAgent
from meshlib.consul.settings import ConsulSettings
from meshlib.errors import ConfigError

__all__ = ["ConnectIdentity", "connect_identity"]

_shared: dict[tuple[ConsulSettings, str], ConnectIdentity] = {}
_lock = threading.Lock()


class ConnectIdentity:
    """One service's Connect certificates and what is built on them (see the module docstring)."""

    def __init__(
        self,
        service: str,
        consul: ConsulSettings,
        *,
        first_timeout: float = 10.0,
        authz_ttl: float = 5.0,
    ) -> None:
        self.service = service
        self._key = (consul, service)
        self._authz_ttl = authz_ttl
        self.watcher = CertificateWatcher(
            ConnectAgent(consul), service, first_timeout=first_timeout
        )
        self.client = ConnectClient(self.watcher)
        self._server: ConnectServer | None = None
        self._lock = threading.Lock()
        self.watcher.start(wait=False)

    def wait(self) -> Bundle:
        """Block until the first leaf and roots are in (``ConnectUnavailable`` says why not)."""
        return self.watcher.bundle

    def server(self) -> ConnectServer:
        """The inbound side (waits for the first certificate)."""
        with self._lock:
            if self._server is None:
                self._server = ConnectServer(self.watcher, authz_ttl=self._authz_ttl)
            return self._server

    def asgi(self, app: Any) -> ConnectASGIMiddleware:
        """``app`` behind intention checks: 403 for a caller the intentions deny."""
        return ConnectASGIMiddleware(app, self.server())

    def wsgi(self, app: Any) -> ConnectWSGIMiddleware:
        return ConnectWSGIMiddleware(app, self.server())

    def uvicorn_config(self, app: Any, **kwargs: Any) -> Any:
        """A ``uvicorn.Config`` serving ``app`` over Connect mTLS, intentions checked (keywords
        are uvicorn's). Needs the ``connect`` extra (uvicorn)."""
        from meshlib.connect import uvicorn as connect_uvicorn

        server = self.server()
        return connect_uvicorn.config(ConnectASGIMiddleware(app, server), server, **kwargs)

    def state(self) -> dict[str, Any]:
        w = self.watcher
        pending = w.pending
        bundle = None if pending is not None else w.bundle
        return {
            "service": self.service,
            "uri": bundle.leaf.uri if bundle else None,
            "serial": bundle.leaf.serial if bundle else None,
            "valid_before": bundle.leaf.valid_before if bundle else None,
            "leaf_expires_in_s": _expires_in(bundle.leaf.valid_before) if bundle else None,
            "trust_domain": bundle.trust_domain if bundle else None,
            "roots": len(bundle.roots.pems) if bundle else 0,
            "rotations": w.rotations,
            "errors": w.errors,
            "last_error": w.last_error,
        }

    def close(self) -> None:
        """Stop the certificate watch; the next ``connect_identity()`` builds a new one."""
        with _lock:
            if _shared.get(self._key) is self:
                del _shared[self._key]
        self.watcher.close()


def _expires_in(valid_before: str) -> float | None:
    """Seconds until an RFC 3339 time (the leaf's ``ValidBefore``), None if unreadable."""
    try:
        when = dt.datetime.fromisoformat(valid_before)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round((when - dt.datetime.now(dt.UTC)).total_seconds(), 3)


def connect_identity(config: MeshConfig | None = None) -> ConnectIdentity:
    """The process's ``ConnectIdentity`` for ``config`` (default: ``MeshConfig.from_env()``)."""
    config = config if config is not None else MeshConfig.from_env()
    settings = config.connect
    if not settings.service:
        raise ConfigError(
            "a Connect identity needs this service's name: set MESH_SERVICE_NAME "
            "(or MESH_CONNECT_SERVICE)"
        )
    key = (config.consul, settings.service)
    with _lock:
        identity = _shared.get(key)
        if identity is None:
            identity = _shared[key] = ConnectIdentity(
                settings.service,
                config.consul,
                first_timeout=settings.first_timeout,
                authz_ttl=settings.authz_ttl,
            )
        return identity
