"""Serving a Connect service with the standard library's WSGI server, for tests and small tools.

``wsgiref`` knows nothing of TLS, and a production WSGI server (gunicorn) brings its own; this
is the smallest server that speaks Connect mutual TLS: one thread per connection, the handshake
done on that thread (so a slow or hostile client never stalls ``accept``), the rotating server
context from ``ConnectServer``, and the client certificate put in ``environ["meshlib.peercert"]``
where ``ConnectWSGIMiddleware`` looks for it.

    httpd = meshlib.connect.wsgi.make_server(identity.wsgi(app), identity.server(), port=8443)
    httpd.serve_forever()
"""

from __future__ import annotations

import socket
import socketserver
import ssl
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from meshlib.connect.server import ConnectServer

__all__ = ["ConnectWSGIServer", "PeerCertHandler", "make_server"]


class PeerCertHandler(WSGIRequestHandler):
    """wsgiref's handler, with the verified client certificate in the environ."""

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        getpeercert = getattr(self.connection, "getpeercert", None)
        environ["meshlib.peercert"] = getpeercert() if getpeercert is not None else None
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: access logs belong to the application's own logging."""


class ConnectWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A threading WSGI server whose connections are Connect mutual TLS."""

    daemon_threads = True
    connect: ConnectServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        sock.settimeout(10.0)  # a client that stops mid-handshake frees its thread
        try:
            tls = self.connect.ssl_context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            sock.close()  # no certificate, a wrong one, or plaintext: refused before any app code
            return
        tls.settimeout(None)
        super().finish_request(tls, client_address)


def make_server(
    app: Any, server: ConnectServer, *, host: str = "127.0.0.1", port: int = 0
) -> ConnectWSGIServer:
    """A ``ConnectWSGIServer`` for ``app`` on ``host:port`` (port 0: the kernel chooses)."""
    httpd = ConnectWSGIServer((host, port), PeerCertHandler)
    httpd.connect = server
    httpd.set_app(app)
    return httpd
