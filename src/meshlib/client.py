"""The public clients: httpx's own client classes with the mesh transport mounted inside.

``AsyncMeshClient`` / ``MeshClient`` subclass ``httpx.AsyncClient`` / ``httpx.Client`` and add no
request methods: everything a user knows about httpx (headers, auth, timeout, event hooks,
base_url, verify/cert, streaming) keeps working. The mesh lives in ``AsyncMeshTransport`` /
``MeshTransport`` (``meshlib.transport``), which the clients mount under everything.

Two httpx behaviours are adjusted for mesh hosts only, both because a service name means
nothing outside the mesh: environment proxies (``HTTP_PROXY`` with ``trust_env``) and ``mounts=``
never capture a mesh host; pass-through hosts keep httpx's behaviour exactly.
"""

from __future__ import annotations

import datetime
import random
import time
from typing import Any

import httpx
from httpx import USE_CLIENT_DEFAULT
from httpx._client import ClientState  # httpx is pinned to 0.28: see _FastPaths._direct

from meshlib.classify import Classifier
from meshlib.clock import Clock
from meshlib.config import MeshConfig
from meshlib.discovery.base import Discovery
from meshlib.errors import ConfigError
from meshlib.extensions import PREFETCH
from meshlib.transport import AsyncMeshTransport, MeshTransport

__all__ = ["AsyncMeshClient", "MeshClient"]


_HTTP_KEYS = ("verify", "cert", "trust_env", "limits")
_URL_CACHE_LIMIT = 2048
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class _MeshCookies(httpx.Cookies):
    """httpx's cookie jar, which skips the cookie machinery for responses that set no cookie.

    ``Client`` hands every response to ``extract_cookies``, which builds urllib request and
    ``email.message`` objects even when there is no ``Set-Cookie`` header: a measurable share of
    a request's CPU (benchmarks/README.md). The result is identical, only cheaper.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def _stamp(response: httpx.Response, start: float) -> None:
    """Set ``response.elapsed`` where httpx could not. httpx stamps it when its own stream
    wrapper closes, but a call that does not stream has its body read and closed inside the
    mesh, before httpx wraps the stream, so ``elapsed`` would raise RuntimeError."""
    if not hasattr(response, "_elapsed"):
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)


class _FastPaths:
    """What both clients change in httpx's client layer: behaviour-neutral speed-ups only."""

    base_url: httpx.URL
    follow_redirects: bool
    max_redirects: int
    _url_cache: dict[str, httpx.URL]
    _url_cache_base: httpx.URL | None
    _cookies: httpx.Cookies
    _auth: httpx.Auth | None
    _headers: httpx.Headers
    _params: httpx.QueryParams
    timeout: httpx.Timeout
    _event_hooks: dict[str, list[Any]]
    _state: ClientState

    def _direct(self, request: httpx.Request, auth: Any, follow_redirects: Any) -> bool:
        """Whether ``send`` may skip httpx's auth and redirect layers for this request.

        With no auth anywhere (client, call or URL user info), no event hooks and redirects not
        followed, those layers come down to one ``_send_single_request`` wrapped in an auth
        generator pair and a redirect loop of one turn: about 12 us a request. The direct path
        does exactly what they would (state, timeout, history, ``next_request`` on a redirect),
        and anything else goes through httpx's own ``send``.
        """
        return (
            auth is USE_CLIENT_DEFAULT
            and self._auth is None
            and (
                follow_redirects is False
                or (follow_redirects is USE_CLIENT_DEFAULT and not self.follow_redirects)
            )
            and self._state is not ClientState.CLOSED
            and self.max_redirects >= 0
            and not self._event_hooks["request"]
            and not self._event_hooks["response"]
            and not request.url.userinfo
        )

    def _sent(self, request: httpx.Request, response: httpx.Response) -> None:
        """What httpx's redirect layer does to a response it does not follow."""
        response.history = []
        if response.has_redirect_location:
            response.next_request = self._build_redirect_request(  # type: ignore[attr-defined]
                request, response
            )

    def _init_fast_paths(self) -> None:
        self._url_cache = {}
        self._url_cache_base = None
        self._cookies = _MeshCookies(self._cookies)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._cookies = _MeshCookies(cookies)

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Request:
        # httpx builds every request through three header objects and five header lookups
        # (about 12 us). A bodiless call with nothing of its own to merge (no params, headers,
        # cookies, timeout or extensions, and none on the client but headers) is built
        # directly, into exactly the request httpx would build (tests compare the two).
        if (
            method in _BODILESS
            and content is None
            and data is None
            and files is None
            and json is None
            and params is None
            and headers is None
            and cookies is None
            and extensions is None
            and timeout is USE_CLIENT_DEFAULT
            and not self._params
            and not self._cookies
        ):
            return self._bare_request(method, self._merge_url(url))
        return super().build_request(  # type: ignore[misc, no-any-return]
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )

    def _bare_request(self, method: str, url: httpx.URL) -> httpx.Request:
        """What ``httpx.Request(method, url, headers=client headers, extensions=timeout)``
        gives for a bodiless method: Host first unless the client sets one, an empty body."""
        request = httpx.Request.__new__(httpx.Request)
        request.method = method
        request.url = httpx.URL(url)
        raw = self._headers.raw
        if url.host and not any(key.lower() == b"host" for key, _ in raw):
            raw.insert(0, (b"Host", url.netloc))
        request.headers = httpx.Headers(raw)
        request.extensions = {"timeout": self.timeout.as_dict()}
        request.stream = httpx.ByteStream(b"")
        request._content = b""
        return request

    def _merge_url(self, url: httpx.URL | str) -> httpx.URL:
        # httpx re-parses the URL string of every request (~30 us); URLs are immutable, so a
        # parsed one is reused for as long as base_url stays the same.
        if not isinstance(url, str):
            return super()._merge_url(url)  # type: ignore[misc, no-any-return]
        if self._url_cache_base is not self.base_url:
            self._url_cache.clear()
            self._url_cache_base = self.base_url
        merged = self._url_cache.get(url)
        if merged is None:
            merged = super()._merge_url(url)  # type: ignore[misc]
            if len(self._url_cache) >= _URL_CACHE_LIMIT:
                self._url_cache.clear()
            self._url_cache[url] = merged
        return merged


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The httpx keywords the mesh's own transports also need, and those for the pass-through."""
    http = {k: kwargs[k] for k in _HTTP_KEYS if k in kwargs}
    through = dict(http)
    for k in ("http1", "http2"):  # http2=True is refused before this
        if k in kwargs:
            through[k] = kwargs[k]
    return http, through


class _MeshClientBase(_FastPaths):
    """What both clients add to httpx's: the mesh transport under everything, the fast paths,
    ``mesh_state()``, and mesh hosts never captured by proxies or mounts."""

    _mesh_cls: type[Any]
    _passthrough_cls: type[Any]
    mesh: Any

    def __init__(
        self,
        *,
        config: MeshConfig | None = None,
        discovery: Discovery | None = None,
        classifier: Classifier | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: Any = None,
        connect: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("http2"):
            raise ConfigError(
                "http2=True: meshlib reaches mesh services over HTTP/1.1 (its own engine, or "
                "httpx's transport under MESH_ENGINE=httpx) and does not offer HTTP/2 to mesh "
                "endpoints, so the option would be ignored for them. Remove http2=True; for "
                "HTTP/2 to hosts outside the mesh, use a plain httpx client for those hosts."
            )
        http, through = _split(kwargs)
        self.mesh = self._mesh_cls(
            config=config,
            connect=connect,
            discovery=discovery,
            classifier=classifier,
            clock=clock,
            rng=rng,
            transport=transport,
            passthrough=self._passthrough_cls(**through),
            **http,
        )
        super().__init__(transport=self.mesh, **kwargs)  # type: ignore[call-arg]
        self._init_fast_paths()
        # meshlib instruments its own clients (one INTERNAL span per call, one CLIENT span per
        # attempt, pass-through requests included). opentelemetry-instrumentation-httpx's
        # per-client mode would wrap the whole mesh in a second CLIENT span; this is the flag it
        # checks to leave an already-instrumented client alone.
        self._is_instrumented_by_opentelemetry = True

    def mesh_state(self) -> dict[str, Any]:
        """What the mesh knows now: services, endpoints, breakers, budgets (JSON-ready)."""
        state: dict[str, Any] = self.mesh.mesh_state()
        return state

    def _transport_for_url(self, url: httpx.URL) -> Any:
        if self.mesh.router.target(url.host) is not None:
            return self.mesh
        return super()._transport_for_url(url)  # type: ignore[misc]


class AsyncMeshClient(_MeshClientBase, httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose mesh-service URLs go through the mesh.

    ``transport=`` here is the transport *under* the mesh for mesh endpoints (for example an
    ``httpx.MockTransport`` in a unit test); every other httpx keyword means what it always does.
    """

    _mesh_cls = AsyncMeshTransport
    _passthrough_cls = httpx.AsyncHTTPTransport
    mesh: AsyncMeshTransport

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        # Not a new method: httpx's own, noting whether the caller streams. A call that does not
        # stream has its body read inside the mesh, where a reset mid-body is still retryable.
        if not stream:
            request.extensions[PREFETCH] = True
        start = time.perf_counter()
        if not self._direct(request, auth, follow_redirects):
            response = await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        else:
            self._state = ClientState.OPENED
            self._set_timeout(request)
            response = await self._send_single_request(request)
            try:
                self._sent(request, response)
                if not stream:
                    await response.aread()
            except BaseException:
                await response.aclose()
                raise
        if not stream:
            _stamp(response, start)
        return response


class MeshClient(_MeshClientBase, httpx.Client):
    """An ``httpx.Client`` whose mesh-service URLs go through the mesh (see ``AsyncMeshClient``)."""

    _mesh_cls = MeshTransport
    _passthrough_cls = httpx.HTTPTransport
    mesh: MeshTransport

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        # See AsyncMeshClient.send.
        if not stream:
            request.extensions[PREFETCH] = True
        start = time.perf_counter()
        if not self._direct(request, auth, follow_redirects):
            response = super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        else:
            self._state = ClientState.OPENED
            self._set_timeout(request)
            response = self._send_single_request(request)
            try:
                self._sent(request, response)
                if not stream:
                    response.read()
            except BaseException:
                response.close()
                raise
        if not stream:
            _stamp(response, start)
        return response
