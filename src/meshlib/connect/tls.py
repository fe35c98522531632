"""TLS contexts for Connect's mutual TLS, built in memory from the agent's PEM answers.

Both sides verify the peer's chain against the Connect CA roots and require a certificate; the
identity check is the URI SAN (``identity``), not a host name, so hostname checking is off and
the caller checks the peer's SPIFFE ID after the handshake. The leaf's private key never touches
the disk: ``ssl`` loads certificate chains only from a path, so the chain is handed over through
an anonymous in-memory file (``memfd_create``) on Linux; elsewhere through a temporary file
readable by this user only, removed as soon as it is loaded.

A server context follows rotation without a restart: the context a server was started with
swaps every new handshake over to the newest context (``ssl``'s ``sni_callback`` runs for every
ClientHello, with or without a server name), so uvicorn, hypercorn or a stdlib server keep the
object they were given.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["RotatingServerContext", "client_context", "peer_uris", "server_context"]


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    data = (cert_pem.strip() + "\n" + key_pem.strip() + "\n").encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("meshlib-connect-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshlib-") as tmp:  # pragma: no cover - not Linux
        path = os.path.join(tmp, "leaf.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            ctx.load_cert_chain(path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _base(ctx: ssl.SSLContext, cert_pem: str, key_pem: str, roots: Sequence[str]) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="\n".join(r.strip() for r in roots) + "\n")
    _load_chain(ctx, cert_pem, key_pem)


def client_context(cert_pem: str, key_pem: str, roots: Sequence[str]) -> ssl.SSLContext:
    """Present our leaf, trust only ``roots``, require the server's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the identity is the URI SAN, checked after the handshake
    _base(ctx, cert_pem, key_pem, roots)
    return ctx


def server_context(cert_pem: str, key_pem: str, roots: Sequence[str]) -> ssl.SSLContext:
    """Present our leaf, and require a client certificate that chains to ``roots``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _base(ctx, cert_pem, key_pem, roots)
    return ctx


def peer_uris(peercert: dict[str, Any] | None) -> list[str]:
    """The URI SANs of a peer certificate as ``SSLSocket.getpeercert()`` returns it."""
    if not peercert:
        return []
    return [str(v) for k, v in peercert.get("subjectAltName", ()) if k == "URI"]


class RotatingServerContext:
    """A server ``SSLContext`` that always hands new handshakes the newest certificate.

    ``context`` is the object to give the server (once); ``update()`` installs a newer leaf or
    root set, and every handshake from then on uses it. Connections already open keep theirs.
    """

    def __init__(self, cert_pem: str, key_pem: str, roots: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._current = server_context(cert_pem, key_pem, roots)
        self.context = self._current
        self.context.sni_callback = self._swap

    def update(self, cert_pem: str, key_pem: str, roots: Sequence[str]) -> None:
        fresh = server_context(cert_pem, key_pem, roots)
        fresh.sni_callback = self._swap
        with self._lock:
            self._current = fresh

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def _swap(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: Any) -> None:
        current = self._current
        if ctx is not current:
            sslobj.context = current
