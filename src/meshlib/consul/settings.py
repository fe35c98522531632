"""How to reach Consul: address, token, TLS, namespace; secrets kept out of every repr and error.

``config`` resolves these from ``CONSUL_*`` variables by the Go client's rules (meshlib does it
itself because py-consul reads only four variables and lets ``CONSUL_HTTP_TOKEN`` override an
explicit token). The token and the HTTP basic-auth password are held in fields that are left
out of ``repr`` and never formatted into a message, so they cannot leak through logs, spans,
exceptions or ``python -m meshlib config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConsulSettings"]


@dataclass(frozen=True, kw_only=True)
class ConsulSettings:
    """Everything needed to talk to one Consul agent."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 8500
    port_implied: bool = False
    """True when ``CONSUL_HTTP_ADDR`` gave no port and the scheme's default (80/443) applies."""
    unix_socket: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str = "none"
    """Where the token came from (``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_TOKEN``, ``code``)."""
    verify: bool = True
    cacert: str | None = None
    capath: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    namespace: str | None = None
    partition: str | None = None
    datacenter: str | None = None
    http_auth_user: str | None = None
    http_auth_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"Consul scheme must be http or https, got {self.scheme!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"Consul port must be within [1, 65535], got {self.port}")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError(
                "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together (both or neither)"
            )

    @property
    def address(self) -> str:
        """Where Consul is, for messages: never includes a credential."""
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL requests are built on (a unix socket still needs an http origin)."""
        if self.unix_socket is not None:
            return "http://localhost"
        return self.address

    def describe(self) -> dict[str, object]:
        """A printable view: the token is shown only as set or not, and where it came from."""
        return {
            "address": self.address,
            "token": f"<set from {self.token_source}>" if self.token else "<none>",
            "verify": self.verify,
            "cacert": self.cacert,
            "capath": self.capath,
            "client_cert": self.client_cert,
            "tls_server_name": self.tls_server_name,
            "namespace": self.namespace,
            "partition": self.partition,
            "datacenter": self.datacenter,
            "http_auth": f"{self.http_auth_user}:<redacted>" if self.http_auth_user else None,
        }
