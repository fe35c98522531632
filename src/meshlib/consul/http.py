"""py-consul's HTTP client interface implemented on httpx, async and sync.

py-consul forms Consul API requests and parses the answers, but its own clients are built on
``requests`` (blocking) or ``aiohttp`` (a second HTTP stack). These adapters subclass
``consul.base.HTTPClient`` on httpx instead, so the event loop never blocks and meshlib keeps a
single HTTP stack. They also add what py-consul leaves out: unix sockets, a CA directory, the TLS
server name, HTTP basic auth, and the ``ns`` / ``partition`` / ``stale`` parameters on every
request. Tokens travel only in the ``X-Consul-Token`` header py-consul sets.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any

import consul.base
import httpx

from meshlib.consul.settings import ConsulSettings

__all__ = [
    "AsyncConsulHTTP",
    "ConsulResponseTooLarge",
    "SyncConsulHTTP",
    "async_consul",
    "ssl_context_for",
    "sync_consul",
    "watch_limits",
]


class ConsulResponseTooLarge(Exception):
    """Consul's answer was larger than the configured cap; the body was not read further."""


def ssl_context_for(settings: ConsulSettings) -> ssl.SSLContext | bool:
    """TLS settings for Consul: CA file or directory, client certificate, or verification off."""
    if not settings.verify:
        return False
    ctx = ssl.create_default_context()
    if settings.cacert or settings.capath:
        ctx.load_verify_locations(cafile=settings.cacert, capath=settings.capath)
    if settings.client_cert and settings.client_key:
        ctx.load_cert_chain(settings.client_cert, settings.client_key)
    return ctx


POLL_CONNECTIONS = 16
"""Connections beyond the blocking watches' own: first answers and non-blocking polls."""


def watch_limits(max_watches: int | None) -> httpx.Limits:
    """The watch client's pool: every blocking watch parks one query, and so holds one
    connection, for up to its wait, so the pool allows one per blocking watch plus
    ``POLL_CONNECTIONS`` for the rest. Consul itself limits connections per client address
    (``limits.http_max_conns_per_client``, 200 by default), which the default bound respects."""
    if max_watches is None:
        return httpx.Limits(max_connections=None, max_keepalive_connections=64)
    total = max_watches + POLL_CONNECTIONS
    return httpx.Limits(max_connections=total, max_keepalive_connections=min(total, 64))


WATCH_LIMITS = watch_limits(None)


def _too_large(method: str, path: str, cap: int, size: str) -> ConsulResponseTooLarge:
    return ConsulResponseTooLarge(
        f"Consul's answer to {method} {path} is larger than the {cap}-byte cap ({size}); "
        "raise MESH_CONSUL_MAX_RESPONSE_BYTES if the registry really holds that much"
    )


class _CappedBody:
    """Collects one answer's body, refusing it past ``cap`` bytes (declared or read), so the
    async and the blocking client share the rule and differ only in how they iterate."""

    __slots__ = ("_cap", "_chunks", "_method", "_path", "_total")

    def __init__(self, r: httpx.Response, method: str, path: str, cap: int | None) -> None:
        self._cap, self._method, self._path = cap, method, path
        self._chunks: list[bytes] = []
        self._total = 0
        declared = r.headers.get("content-length", "")
        if cap is not None and declared.isascii() and declared.isdigit() and int(declared) > cap:
            raise _too_large(method, path, cap, f"Content-Length {declared}")

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        cap = self._cap
        if cap is not None and self._total > cap:
            raise _too_large(self._method, self._path, cap, f"more than {cap} bytes read")
        self._chunks.append(chunk)

    def content(self) -> bytes:
        return b"".join(self._chunks)


def _client_kwargs(settings: ConsulSettings, timeout: float) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "base_url": settings.base_url,
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        "trust_env": False,
    }
    if settings.http_auth_user is not None:
        kw["auth"] = (settings.http_auth_user, settings.http_auth_password or "")
    return kw


class _Common:
    settings: ConsulSettings
    stale: bool = False

    def _params(self, params: Any, method: str = "GET") -> list[tuple[str, Any]]:
        out = list(params or [])
        if self.stale and method == "GET":
            out.append(("stale", ""))
        s = self.settings
        if s.namespace:
            out.append(("ns", s.namespace))
        if s.partition:
            out.append(("partition", s.partition))
        return out

    def _url(self, path: str, params: Any, method: str = "GET") -> str:
        url = urllib.parse.quote(path, safe="/:")
        query = self._params(params, method)
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    # py-consul's verbs; ``_request`` is a coroutine function in the async client and a plain
    # one in the sync client, so each verb returns whatever it returns.
    def get(
        self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False
    ) -> Any:
        return self._request(callback, "GET", path, params, headers, None, raw)

    def put(
        self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None
    ) -> Any:
        return self._request(callback, "PUT", path, params, headers, data, False)

    def delete(
        self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None
    ) -> Any:
        return self._request(callback, "DELETE", path, params, headers, data, False)

    def post(
        self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None
    ) -> Any:
        return self._request(callback, "POST", path, params, headers, data, False)

    def _request(
        self, callback: Any, method: str, path: str, params: Any, headers: Any, data: Any, raw: bool
    ) -> Any:
        raise NotImplementedError

    def _extensions(self) -> dict[str, Any]:
        name = self.settings.tls_server_name
        return {"sni_hostname": name} if name else {}


def _response(r: httpx.Response, content: bytes, raw: bool) -> consul.base.Response:
    body: Any = content if raw else content.decode(r.charset_encoding or "utf-8", "replace")
    return consul.base.Response(r.status_code, r.headers, body)


class AsyncConsulHTTP(_Common, consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's async HTTP client on an ``httpx.AsyncClient``."""

    def __init__(
        self,
        settings: ConsulSettings,
        *,
        timeout: float = 660.0,
        stale: bool = False,
        max_response_bytes: int | None = None,
        limits: httpx.Limits = WATCH_LIMITS,
    ) -> None:
        super().__init__(settings.host, settings.port, settings.scheme, settings.verify)
        self.settings = settings
        self.stale = stale
        self.max_response_bytes = max_response_bytes
        transport = httpx.AsyncHTTPTransport(
            uds=settings.unix_socket, verify=ssl_context_for(settings), limits=limits
        )
        self.client = httpx.AsyncClient(transport=transport, **_client_kwargs(settings, timeout))

    async def _request(
        self, callback: Any, method: str, path: str, params: Any, headers: Any, data: Any, raw: bool
    ) -> Any:
        async with self.client.stream(
            method,
            self._url(path, params, method),
            headers=headers or {},
            content=data or None,
            extensions=self._extensions(),
        ) as r:
            body = _CappedBody(r, method, path, self.max_response_bytes)
            async for chunk in r.aiter_bytes():
                body.add(chunk)
        return callback(_response(r, body.content(), raw))

    async def close(self) -> None:
        await self.client.aclose()


class SyncConsulHTTP(_Common, consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's blocking HTTP client on an ``httpx.Client``."""

    def __init__(
        self,
        settings: ConsulSettings,
        *,
        timeout: float = 660.0,
        stale: bool = False,
        max_response_bytes: int | None = None,
    ) -> None:
        super().__init__(settings.host, settings.port, settings.scheme, settings.verify)
        self.settings = settings
        self.stale = stale
        self.max_response_bytes = max_response_bytes
        transport = httpx.HTTPTransport(uds=settings.unix_socket, verify=ssl_context_for(settings))
        self.client = httpx.Client(transport=transport, **_client_kwargs(settings, timeout))

    def _request(
        self, callback: Any, method: str, path: str, params: Any, headers: Any, data: Any, raw: bool
    ) -> Any:
        with self.client.stream(
            method,
            self._url(path, params, method),
            headers=headers or {},
            content=data or None,
            extensions=self._extensions(),
        ) as r:
            body = _CappedBody(r, method, path, self.max_response_bytes)
            for chunk in r.iter_bytes():
                body.add(chunk)
        return callback(_response(r, body.content(), raw))

    def close(self) -> None:
        self.client.close()


class _ConsulBase(consul.base.Consul):  # type: ignore[misc]
    """A py-consul ``Consul`` whose HTTP client, token and address come from our settings only."""

    def __init__(self, settings: ConsulSettings, http: Any) -> None:
        self._meshlib_http = http
        # host and port given: py-consul ignores CONSUL_HTTP_ADDR.
        super().__init__(
            host=settings.host,
            port=settings.port,
            scheme=settings.scheme,
            verify=settings.verify,
            dc=settings.datacenter,
        )
        # py-consul lets CONSUL_HTTP_TOKEN override an explicit token; meshlib's rule
        # (CONSUL_HTTP_TOKEN_FILE first, Go's) has already been applied in the settings.
        self.token = settings.token

    def http_connect(
        self, host: str, port: int, scheme: Any, verify: Any = True, cert: Any = None
    ) -> Any:
        return self._meshlib_http


def async_consul(
    settings: ConsulSettings,
    *,
    timeout: float = 660.0,
    stale: bool = False,
    max_response_bytes: int | None = None,
    max_watches: int | None = None,
) -> Any:
    """A py-consul client whose calls are coroutines, on httpx (``stale``: reads use ?stale;
    answers beyond ``max_response_bytes`` raise ``ConsulResponseTooLarge``)."""
    http = AsyncConsulHTTP(
        settings,
        timeout=timeout,
        stale=stale,
        max_response_bytes=max_response_bytes,
        limits=watch_limits(max_watches),
    )
    return _ConsulBase(settings, http)


def sync_consul(settings: ConsulSettings, *, timeout: float = 660.0, stale: bool = False) -> Any:
    """A py-consul client whose calls block, on httpx (``stale``: reads use ?stale)."""
    return _ConsulBase(settings, SyncConsulHTTP(settings, timeout=timeout, stale=stale))
