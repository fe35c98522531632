"""Serving a Connect service with uvicorn: the rotating server context and the caller's cert.

uvicorn takes an ``ssl_context_factory``, so it can be handed ``ConnectServer.ssl_context`` (which
follows rotation by itself), but it does not pass the client certificate to the application.
These protocol classes are uvicorn's own with one addition: the peer certificate, as
``getpeercert()`` returns it, in ``scope["extensions"]["tls"]["meshlib.peercert"]`` of every
request on the connection, where ``ConnectASGIMiddleware`` finds it.

    config = meshlib.connect.uvicorn.config(app, server, host="127.0.0.1", port=8443)
    uvicorn.Server(config).run()
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol as _H11
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools

from meshlib.connect.server import ConnectServer

__all__ = ["H11Protocol", "HttpToolsProtocol", "config"]


class _PeerCert:
    """Remembers the connection's client certificate and adds it to each request's scope."""

    _meshlib_peercert: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # a mixin: uvicorn's comes next
        ssl_object = transport.get_extra_info("ssl_object")
        self._meshlib_peercert = ssl_object.getpeercert() if ssl_object is not None else None

    @property
    def scope(self) -> Any:
        return self.__dict__.get("_meshlib_scope")

    @scope.setter
    def scope(self, value: Any) -> None:
        if self._meshlib_peercert is not None and isinstance(value, dict):
            tls = value.setdefault("extensions", {}).setdefault("tls", {})
            tls["meshlib.peercert"] = self._meshlib_peercert
        self.__dict__["_meshlib_scope"] = value


class H11Protocol(_PeerCert, _H11):
    """uvicorn's h11 protocol, with the client certificate in the scope."""


class HttpToolsProtocol(_PeerCert, _HttpTools):
    """uvicorn's httptools protocol, with the client certificate in the scope."""


def config(app: Any, server: ConnectServer, **kwargs: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` over Connect mutual TLS (other keywords: uvicorn's)."""
    kwargs.setdefault("http", HttpToolsProtocol)
    return uvicorn.Config(
        app, ssl_context_factory=lambda _config, _default: server.ssl_context, **kwargs
    )
