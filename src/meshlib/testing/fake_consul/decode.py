"""Decoding registration bodies the way Consul does: case-insensitive keys, snake_case aliases.

Go's ``encoding/json`` matches struct fields case-insensitively and Consul additionally
translates snake_case keys (``tagged_addresses``, ``enable_tag_override``, ``script_args``), so
py-consul's lowercase payloads and the docs' CamelCase samples decode to the same thing. Map-typed
fields (``Meta``, ``Header``, ``TaggedAddresses``) keep their user keys untouched. Type errors
become ``DecodeError`` whose text follows ``Request decode failed: ``, as in Consul.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from meshlib.traffic.durations import parse_go_duration

from .model import CheckDef, ServiceDef

__all__ = [
    "DecodeError",
    "Fields",
    "decode_check_def",
    "decode_json_object",
    "decode_service_def",
    "parse_tagged_addresses",
]

# Consul's lib.TranslateKeys aliases whose normalised forms differ from the field's name.
_ALIASES = {"args": "scriptargs"}


class DecodeError(ValueError):
    """A body that Go's decoder would reject; the message follows ``Request decode failed: ``."""


def _norm(key: str) -> str:
    n = key.replace("_", "").lower()
    return _ALIASES.get(n, n)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (an empty body counts as ``{}``)."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(str(exc)) from None
    if not isinstance(data, dict):
        raise DecodeError(f"json: cannot unmarshal {_json_type(data)} into Go value of type object")
    return data


class Fields:
    """Case-insensitive, snake_case-tolerant typed access to one decoded JSON object."""

    __slots__ = ("_data", "_where")

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise DecodeError(
                f"json: cannot unmarshal {_json_type(data)} into Go value of type {where}"
            )
        self._where = where
        self._data: dict[str, object] = {}
        for key, value in data.items():
            self._data[_norm(str(key))] = value

    def _err(self, name: str, value: object, go_type: str) -> DecodeError:
        return DecodeError(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field "
            f"{self._where}.{name} of type {go_type}"
        )

    def raw(self, name: str) -> object:
        """The value under ``name`` in any spelling, or None when absent or null."""
        return self._data.get(_norm(name))

    def has(self, name: str) -> bool:
        """True when ``name`` is present with a non-null value."""
        return self.raw(name) is not None

    def string(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._err(name, value, "string")
        return value

    def integer(self, name: str, default: int = 0) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._err(name, value, "int")
        if isinstance(value, float) and not value.is_integer():
            raise DecodeError(
                f"json: cannot unmarshal number {value} into Go struct field "
                f"{self._where}.{name} of type int"
            )
        return int(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._err(name, value, "bool")
        return value

    def strings(self, name: str) -> list[str] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._err(name, value, "[]string")
        return list(value)

    def str_map(self, name: str) -> dict[str, str] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._err(name, value, "map[string]string")
        return {str(k): v for k, v in value.items()}

    def header_map(self, name: str) -> dict[str, list[str]] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._err(name, value, "map[string][]string")
        out: dict[str, list[str]] = {}
        for key, item in value.items():
            if not isinstance(item, list) or not all(isinstance(v, str) for v in item):
                raise self._err(name, value, "map[string][]string")
            out[str(key)] = list(item)
        return out

    def obj(self, name: str) -> Fields | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._err(name, value, "struct")
        return Fields(value, f"{self._where}.{name}")

    def dict_value(self, name: str) -> dict[str, Any] | None:
        """A nested object kept as-is (``Proxy``, ``Connect``, ``Locality``)."""
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._err(name, value, "struct")
        return dict(value)

    def objs(self, name: str) -> list[Fields] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._err(name, value, "[]struct")
        return [Fields(item, f"{self._where}.{name}") for item in value]

    def duration(self, name: str) -> float | None:
        """A Go duration given as text (``"10s"``) or as a number of nanoseconds."""
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self._err(name, value, "time.Duration")
        if isinstance(value, int | float):
            return float(value) / 1e9
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return parse_go_duration(value)
            except ValueError as exc:
                raise DecodeError(str(exc)) from None
        raise self._err(name, value, "time.Duration")


def parse_tagged_addresses(fields: Fields, name: str) -> dict[str, tuple[str, int]]:
    """Decode ``{"lan": {"address": ..., "port": ...}}`` into ``{"lan": (address, port)}``."""
    raw = fields.raw(name)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DecodeError(
            f"json: cannot unmarshal {_json_type(raw)} into Go struct field {name} "
            "of type map[string]structs.ServiceAddress"
        )
    out: dict[str, tuple[str, int]] = {}
    for key, value in raw.items():
        entry = Fields(value, "ServiceAddress")
        out[str(key)] = (entry.string("Address"), entry.integer("Port"))
    return out


def decode_check_def(f: Fields) -> CheckDef:
    """Decode a ``CheckType``/``CheckDefinition``; validation is left to the caller's context."""
    return CheckDef(
        check_id=f.string("CheckID") or f.string("ID"),
        name=f.string("Name"),
        notes=f.string("Notes"),
        status=f.string("Status"),
        output=f.string("Output"),
        service_id=f.string("ServiceID"),
        ttl=f.duration("TTL"),
        interval=f.duration("Interval"),
        timeout=f.duration("Timeout"),
        deregister_after=f.duration("DeregisterCriticalServiceAfter"),
        http=f.string("HTTP"),
        header=f.header_map("Header"),
        method=f.string("Method"),
        body=f.string("Body"),
        tls_server_name=f.string("TLSServerName"),
        tls_skip_verify=f.boolean("TLSSkipVerify"),
        tcp=f.string("TCP"),
        udp=f.string("UDP"),
        grpc=f.string("GRPC"),
        grpc_use_tls=f.boolean("GRPCUseTLS"),
        h2ping=f.string("H2PING"),
        script_args=f.strings("ScriptArgs") or [],
        docker_container_id=f.string("DockerContainerID"),
        shell=f.string("Shell"),
        alias_node=f.string("AliasNode"),
        alias_service=f.string("AliasService"),
        os_service=f.string("OSService"),
    )


def _is_unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return False


_META_KEY = re.compile(r"[a-zA-Z0-9_-]+")


def _multierror(problems: list[str]) -> str:
    """Go's hashicorp/go-multierror text, which Consul's validation errors are wrapped in."""
    noun = "error occurred" if len(problems) == 1 else "errors occurred"
    items = "".join(f"\n\t* {p}" for p in problems)
    return f"{len(problems)} {noun}:{items}\n\n"


def _validate_weights(passing: int, warning: int) -> None:
    """``structs.ValidateWeights``, reported as ``Invalid Weights: ...``."""
    if passing < 1:
        raise ValueError("Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise ValueError("Invalid Weights: Warning must be greater or equal than 0")
    if passing > 65535 or warning > 65535:
        raise ValueError("Invalid Weights: DNS Weight must be between 0 and 65535")


def _validate_meta(meta: dict[str, str]) -> None:
    """``structs.ValidateServiceMetadata``, reported as ``Invalid Service Meta: ...``."""
    if len(meta) > 64:
        raise ValueError(
            "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
        )
    for key, value in meta.items():
        problem = ""
        if not key:
            problem = "Key cannot be blank"
        elif not _META_KEY.fullmatch(key):
            problem = "Key contains invalid characters"
        elif len(key) > 128:
            problem = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            problem = "Key prefix 'consul-' is reserved for internal use"
        elif len(value) > 512:
            problem = "Value is too long (limit: 512 characters)"
        if problem:
            raise ValueError(
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {problem}"
            )


def decode_service_def(f: Fields, *, name_key: str = "Name") -> ServiceDef:
    """Decode an agent ``ServiceDefinition`` (``name_key="Service"`` for catalog bodies).

    Raises ``DecodeError`` for type errors and ``ValueError`` (with Consul's 400 text) for
    semantic errors such as a missing name or an unspecified address.
    """
    name = f.string(name_key)
    if not name:
        raise ValueError("Missing service name")
    address = f.string("Address")
    if address and _is_unspecified(address):
        raise ValueError("Invalid service address")
    weights = (1, 1)
    weights_f = f.obj("Weights")
    if weights_f is not None:
        weights = (weights_f.integer("Passing"), weights_f.integer("Warning"))
        _validate_weights(*weights)
    meta = f.str_map("Meta") or {}
    _validate_meta(meta)
    checks: list[CheckDef] = []
    single = f.obj("Check")
    if single is not None:
        checks.append(decode_check_def(single))
    for item in f.objs("Checks") or []:
        checks.append(decode_check_def(item))
    checks = [c for c in checks if not c.is_empty()]
    kind = f.string("Kind")
    proxy = f.dict_value("Proxy")
    port = f.integer("Port")
    socket_path = f.string("SocketPath")
    if kind == "connect-proxy":
        problems = []
        dest = Fields(proxy or {}, "ConnectProxyConfig").string("DestinationServiceName")
        if not dest.strip():
            problems.append(
                "Proxy.DestinationServiceName must be non-empty for Connect proxy services"
            )
        if port == 0 and not socket_path:
            problems.append("Port must be set for a Connect proxy")
        if problems:
            raise ValueError(f"Validation failed: {_multierror(problems)}")
    return ServiceDef(
        name=name,
        id=f.string("ID") or name,
        tags=f.strings("Tags") or [],
        address=address,
        port=port,
        meta=meta,
        weights=weights,
        tagged_addresses=parse_tagged_addresses(f, "TaggedAddresses"),
        enable_tag_override=f.boolean("EnableTagOverride"),
        kind=kind,
        proxy=proxy,
        connect=f.dict_value("Connect"),
        socket_path=socket_path,
        locality=f.dict_value("Locality"),
        checks=checks,
    )
