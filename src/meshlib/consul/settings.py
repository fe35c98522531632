"""How to reach Consul (address, token, TLS, namespace) and how to read it (the watch options).

``config`` resolves these from ``CONSUL_*`` variables by the Go client's rules (meshlib does it
itself because py-consul reads only four variables and lets ``CONSUL_HTTP_TOKEN`` override an
explicit token). The token and the HTTP basic-auth password are held in fields that are left
out of ``repr`` and never formatted into a message, so they cannot leak through logs, spans,
exceptions or ``python -m meshlib config``. ``ConsulOptions`` lives here too, apart from the
watches it configures, so a configuration is built without loading the watch machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConsulOptions", "ConsulSettings"]


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


@dataclass(frozen=True, kw_only=True)
class ConsulOptions:
    """How Consul is read (``MESH_CONSUL_*``)."""

    include_warning: bool = False
    stale: bool = True
    wait: float = 300.0
    near: str | None = None
    first_timeout: float = 5.0
    max_staleness: float | None = None
    idle_timeout: float = 600.0
    min_interval: float = 0.05
    error_backoff_min: float = 0.5
    error_backoff_max: float = 30.0
    forbidden_backoff: float = 60.0
    allow_link_local: bool = False
    max_response_bytes: int = 4 * 1024 * 1024
    """Largest answer a watch reads; a bigger one fails that round
    (``MESH_CONSUL_MAX_RESPONSE_BYTES``)."""
    query_margin: float = 2.0
    """A blocking query's total deadline is ``wait x 17/16`` (Consul's jitter) plus this; a
    non-blocking one's is this or 5 s, whichever is longer. A server that drips bytes cannot
    pin a watch past it."""
    max_watches: int = 64
    """Most services watched with blocking queries at once (MESH_CONSUL_MAX_WATCHES); the
    others are polled with non-blocking queries every ``poll_interval``."""
    poll_interval: float = 10.0
    connect: bool = False
    """List Connect endpoints (``/v1/health/connect/<service>``: Connect-native instances and
    sidecar proxies) instead of the services themselves (set from ``MESH_CONNECT``)."""
    connect_plain: tuple[str, ...] = ()
    """Services still listed the plain way while ``connect`` is on."""

    def uses_connect(self, service: str) -> bool:
        return self.connect and service not in self.connect_plain

    def __post_init__(self) -> None:
        if not 1.0 <= self.wait <= 600.0:
            raise ValueError(f"Consul wait must be within [1s, 10m], got {self.wait:g}s")
        if self.first_timeout <= 0:
            raise ValueError(f"first_timeout must be > 0, got {self.first_timeout}")
        if self.max_response_bytes < 1024:
            raise ValueError(
                f"max_response_bytes must be at least 1024, got {self.max_response_bytes}"
            )
        if self.query_margin <= 0:
            raise ValueError(f"query_margin must be > 0, got {self.query_margin}")
        if not 1 <= self.max_watches <= 10_000:
            raise ValueError(f"max_watches must be within [1, 10000], got {self.max_watches}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {self.poll_interval}")

    def deadline(self, blocking: bool) -> float:
        """Total time one query may take: Consul answers a blocking query within wait + wait/16
        (its jitter); past that plus a margin the agent, or something between, is not
        answering, however many bytes trickle in."""
        if not blocking:
            return max(self.query_margin, 5.0)
        return self.wait * 17 / 16 + self.query_margin
