"""meshlib's own HTTP/1.1 engine for mesh endpoints, exposed as ordinary httpx transports.

Stock httpx (httpcore's pool plus h11) costs about 800 µs of client CPU per request at
concurrency 1 and about 2.9 ms at concurrency 32, because httpcore scans the whole pool
for every request; a raw asyncio keep-alive client costs about 75 µs. Every request the
mesh makes goes to a plain ``http://`` or ``https://`` HTTP/1.1 origin it chose itself,
so those requests are served by this engine while users keep the httpx API::

    client = httpx.AsyncClient(transport=AsyncEngine())
    client = httpx.Client(transport=SyncEngine())

``http11`` holds the I/O-free parts both drivers share (request serialisation, httptools
response parsing, exception mapping, pool bookkeeping); ``aio`` and ``sync`` only differ
in how they wait.
"""

from typing import TYPE_CHECKING, Any

from meshlib import lazy

# ``aio`` imports asyncio, which a sync service never needs, and an async service never needs
# the blocking ``sync``: each loads on first use.
_EXPORTS = {"AsyncEngine": "aio", "SyncEngine": "sync"}

if TYPE_CHECKING:
    from .aio import AsyncEngine
    from .sync import SyncEngine

__all__ = ["AsyncEngine", "SyncEngine"]


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _EXPORTS, name, globals())
