"""``CONSUL_*`` and ``MESH_CONSUL_*`` settings, resolved by the Go client's rules.

These functions parse a mapping handed to them by ``config`` (still the only reader of
``os.environ``). Go's ``api.DefaultConfig`` / ``NewClient`` is the reference, because it is what
the ``consul`` CLI and every Go service in the same deployment do:

* ``CONSUL_HTTP_ADDR``: ``host:port``, ``http://host:port``, ``https://host:port`` or
  ``unix:///path``; a scheme in the address wins over ``CONSUL_HTTP_SSL``; without a port the
  scheme's default applies (80 or 443), as in Go; unset means ``127.0.0.1:8500``;
* ``CONSUL_HTTP_TOKEN_FILE`` wins over ``CONSUL_HTTP_TOKEN`` (the file's content, trimmed);
* ``CONSUL_HTTP_SSL_VERIFY=false`` turns verification off and logs a warning;
* ``CONSUL_CLIENT_CERT`` and ``CONSUL_CLIENT_KEY`` must be set together;
* ``CONSUL_HTTP_AUTH`` is ``user[:password]``; credentials written into the address
  (``http://user:pw@host:8500``) are used the same way, as Go's ``net/http`` sends a URL's user
  info, and ``CONSUL_HTTP_AUTH`` wins over them (with a warning).

No error message ever contains the token or the password.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlib.consul.settings import ConsulOptions, ConsulSettings
from meshlib.errors import ConfigError

if TYPE_CHECKING:
    from meshlib.consul.service import ServiceRegistration

__all__ = ["consul_options_from_env", "consul_settings_from_env", "registration_from_env"]

log = logging.getLogger("meshlib.config")


def _redacted_addr(raw: str) -> str:
    """``raw`` with any ``user:password@`` replaced, for error messages."""
    scheme, sep, rest = raw.rpartition("://")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "<redacted>@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{tail}"


def _addr(value: str) -> dict[str, Any]:
    raw = value.strip()
    shown = _redacted_addr(raw)
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
        if not path:
            raise ConfigError(
                "CONSUL_HTTP_ADDR='unix://' needs a socket path, e.g. unix:///run/consul.sock"
            )
        return {"unix_socket": path, "scheme": "http"}
    scheme = None
    if "://" in raw:
        scheme, _, rest = raw.partition("://")
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"CONSUL_HTTP_ADDR={shown!r} has scheme {scheme!r}; use host:port, http://, "
                "https:// or unix://"
            )
    else:
        rest = raw
    parsed = urllib.parse.urlsplit("//" + rest)
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError(
            f"CONSUL_HTTP_ADDR={shown!r} has an invalid port; write host:port with a port "
            "within 1-65535, e.g. 127.0.0.1:8500"
        ) from None
    if not parsed.hostname or parsed.path not in ("", "/"):
        raise ConfigError(
            f"CONSUL_HTTP_ADDR={shown!r} is not host:port, http(s)://host:port or unix:///path"
        )
    out: dict[str, Any] = {"host": parsed.hostname}
    if scheme is not None:
        out["scheme"] = scheme
    if port is not None:
        out["port"] = port
    if parsed.username is not None:
        # Go's net/http sends a URL's user info as basic auth, so the Go client (and the
        # consul CLI) authenticate with credentials written into CONSUL_HTTP_ADDR.
        out["url_auth"] = (
            urllib.parse.unquote(parsed.username),
            urllib.parse.unquote(parsed.password or ""),
        )
    return out


def consul_settings_from_env(
    env: Mapping[str, str], parse_bool: Callable[[str, str], bool]
) -> ConsulSettings:
    """ConsulSettings from ``CONSUL_*`` variables (Go client semantics, see module docstring)."""
    kw: dict[str, Any] = {}
    addr = _addr(env["CONSUL_HTTP_ADDR"]) if env.get("CONSUL_HTTP_ADDR") else {}
    url_auth: tuple[str, str] | None = addr.pop("url_auth", None)
    scheme_given = "scheme" in addr
    kw.update(addr)
    if not scheme_given and env.get("CONSUL_HTTP_SSL"):
        kw["scheme"] = "https" if parse_bool("CONSUL_HTTP_SSL", env["CONSUL_HTTP_SSL"]) else "http"
    if "port" not in kw and "unix_socket" not in kw:
        if env.get("CONSUL_HTTP_ADDR"):
            # As in Go: no port means the scheme's default (``meshlib check`` warns).
            kw["port"] = 443 if kw.get("scheme") == "https" else 80
            kw["port_implied"] = True
        else:
            kw["port"] = 8500
    if env.get("CONSUL_HTTP_SSL_VERIFY"):
        kw["verify"] = parse_bool("CONSUL_HTTP_SSL_VERIFY", env["CONSUL_HTTP_SSL_VERIFY"])
        if not kw["verify"]:
            log.warning("CONSUL_HTTP_SSL_VERIFY=false: Consul's TLS certificate is not verified")
    token_file = env.get("CONSUL_HTTP_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"CONSUL_HTTP_TOKEN_FILE={token_file!r} cannot be read ({exc.strerror}); "
                "point it at a readable file holding the ACL token"
            ) from None
        if token:
            kw["token"], kw["token_source"] = token, "CONSUL_HTTP_TOKEN_FILE"
    if "token" not in kw and env.get("CONSUL_HTTP_TOKEN"):
        kw["token"], kw["token_source"] = env["CONSUL_HTTP_TOKEN"].strip(), "CONSUL_HTTP_TOKEN"
    for var, attr in (
        ("CONSUL_CACERT", "cacert"),
        ("CONSUL_CAPATH", "capath"),
        ("CONSUL_CLIENT_CERT", "client_cert"),
        ("CONSUL_CLIENT_KEY", "client_key"),
    ):
        if env.get(var):
            path = env[var]
            if not Path(path).exists():
                raise ConfigError(
                    f"{var}={path!r} does not exist; point it at a PEM file or directory"
                )
            kw[attr] = path
    for var, attr in (
        ("CONSUL_TLS_SERVER_NAME", "tls_server_name"),
        ("CONSUL_NAMESPACE", "namespace"),
        ("CONSUL_PARTITION", "partition"),
        ("CONSUL_DATACENTER", "datacenter"),
    ):
        if env.get(var):
            kw[attr] = env[var].strip()
    if env.get("CONSUL_HTTP_AUTH"):
        user, _, password = env["CONSUL_HTTP_AUTH"].partition(":")
        if not user:
            raise ConfigError("CONSUL_HTTP_AUTH=<redacted> must look like user[:password]")
        kw["http_auth_user"], kw["http_auth_password"] = user, password
        if url_auth is not None:
            log.warning(
                "CONSUL_HTTP_ADDR carries credentials and CONSUL_HTTP_AUTH is set: using "
                "CONSUL_HTTP_AUTH (as Consul's Go client does); remove one of them"
            )
    elif url_auth is not None:
        if not url_auth[0]:
            raise ConfigError(
                "CONSUL_HTTP_ADDR=<redacted>: the credentials before '@' must look like "
                "user[:password]"
            )
        kw["http_auth_user"], kw["http_auth_password"] = url_auth
        log.info(
            "CONSUL_HTTP_ADDR carries credentials: sending them as HTTP basic auth, as "
            "CONSUL_HTTP_AUTH would (user %r)",
            url_auth[0],
        )
    try:
        return ConsulSettings(**kw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_EXAMPLES = {"MESH_CONSUL_MAX_RESPONSE_BYTES": "4194304", "MESH_CONSUL_MAX_WATCHES": "64"}


def consul_options_from_env(
    env: Mapping[str, str],
    parse_bool: Callable[[str, str], bool],
    parse_duration: Callable[[str, str], float],
) -> ConsulOptions:
    """ConsulOptions from ``MESH_CONSUL_*`` and ``MESH_DISCOVERY_*`` variables."""
    kw: dict[str, Any] = {}
    if "MESH_CONSUL_HEALTH" in env:
        value = env["MESH_CONSUL_HEALTH"].strip().lower()
        if value not in ("passing", "warning"):
            raise ConfigError(
                f"MESH_CONSUL_HEALTH={value!r} is not accepted; use passing or warning "
                "(warning: also route to instances whose worst check is warning)"
            )
        kw["include_warning"] = value == "warning"
    if "MESH_CONSUL_CONSISTENCY" in env:
        value = env["MESH_CONSUL_CONSISTENCY"].strip().lower()
        if value not in ("stale", "default"):
            raise ConfigError(
                f"MESH_CONSUL_CONSISTENCY={value!r} is not accepted; use stale or default"
            )
        kw["stale"] = value == "stale"
    for var, attr in (
        ("MESH_CONSUL_WAIT", "wait"),
        ("MESH_DISCOVERY_TIMEOUT", "first_timeout"),
        ("MESH_CONSUL_IDLE_TIMEOUT", "idle_timeout"),
    ):
        if var in env:
            kw[attr] = parse_duration(var, env[var])
    if env.get("MESH_DISCOVERY_MAX_STALENESS", "").strip().lower() not in ("", "none", "off"):
        kw["max_staleness"] = parse_duration(
            "MESH_DISCOVERY_MAX_STALENESS", env["MESH_DISCOVERY_MAX_STALENESS"]
        )
    if env.get("MESH_CONSUL_NEAR"):
        kw["near"] = env["MESH_CONSUL_NEAR"].strip()
    if "MESH_CONSUL_ALLOW_LINK_LOCAL" in env:
        kw["allow_link_local"] = parse_bool(
            "MESH_CONSUL_ALLOW_LINK_LOCAL", env["MESH_CONSUL_ALLOW_LINK_LOCAL"]
        )
    for var, attr in (
        ("MESH_CONSUL_MAX_RESPONSE_BYTES", "max_response_bytes"),
        ("MESH_CONSUL_MAX_WATCHES", "max_watches"),
    ):
        if var in env:
            raw = env[var].strip()
            if not (raw.isascii() and raw.isdigit()):
                raise ConfigError(f"{var}={raw!r} must be a whole number, e.g. {_EXAMPLES[var]}")
            kw[attr] = int(raw)
    if "MESH_CONSUL_POLL_INTERVAL" in env:
        kw["poll_interval"] = parse_duration(
            "MESH_CONSUL_POLL_INTERVAL", env["MESH_CONSUL_POLL_INTERVAL"]
        )
    try:
        return ConsulOptions(**kw)
    except ValueError as exc:
        raise ConfigError(f"MESH_CONSUL_*: {exc}") from None


def _pairs(name: str, value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}: entry {part.strip()!r} must look like key=value")
        out[key.strip()] = val.strip()
    return out


def registration_from_env(
    env: Mapping[str, str], parse_duration: Callable[[str, str], float]
) -> ServiceRegistration:
    """This service's registration from ``MESH_SERVICE_*``."""
    kw: dict[str, Any] = {"name": env["MESH_SERVICE_NAME"].strip()}
    port = env.get("MESH_SERVICE_PORT", "").strip()
    if not port.isdigit():
        raise ConfigError(
            f"MESH_SERVICE_PORT={port!r} must be the port this service listens on (1-65535)"
        )
    kw["port"] = int(port)
    if env.get("MESH_SERVICE_ID"):
        kw["id"] = env["MESH_SERVICE_ID"].strip()
    if env.get("MESH_SERVICE_ADDRESS"):
        kw["address"] = env["MESH_SERVICE_ADDRESS"].strip()
    if env.get("MESH_SERVICE_TAGS"):
        kw["tags"] = tuple(t.strip() for t in env["MESH_SERVICE_TAGS"].split(",") if t.strip())
    if env.get("MESH_SERVICE_META"):
        kw["meta"] = _pairs("MESH_SERVICE_META", env["MESH_SERVICE_META"])
    if env.get("MESH_SERVICE_WEIGHTS"):
        raw = env["MESH_SERVICE_WEIGHTS"]
        passing, _, warning = raw.partition(",")
        if not passing.strip().isdigit() or (warning and not warning.strip().isdigit()):
            raise ConfigError(f"MESH_SERVICE_WEIGHTS={raw!r} must look like 10 or 10,1")
        kw["weights"] = (int(passing), int(warning) if warning else 1)
    if env.get("MESH_SERVICE_CHECK"):
        kw["check"] = env["MESH_SERVICE_CHECK"].strip().lower()
    if env.get("MESH_SERVICE_CHECK_HTTP"):
        kw["http_url"] = env["MESH_SERVICE_CHECK_HTTP"].strip()
    for var, attr in (
        ("MESH_SERVICE_CHECK_TTL", "ttl"),
        ("MESH_SERVICE_CHECK_INTERVAL", "interval"),
        ("MESH_SERVICE_DEREGISTER_AFTER", "deregister_after"),
    ):
        if env.get(var):
            kw[attr] = parse_duration(var, env[var])
    from meshlib.consul.service import ServiceRegistration

    try:
        return ServiceRegistration(**kw)
    except ValueError as exc:
        raise ConfigError(f"MESH_SERVICE_*: {exc}") from None
