"""Consul's three L7 config entries, validated: ``service-resolver``, ``-splitter``, ``-router``.

An entry is input (from an operator's JSON, a static file or a registry), so it is checked
before anything compiles it: the kind, a DNS-safe name, durations in Go's syntax, subset
filters (by a check handed in: FakeConsul's is the health endpoint's schema, meshlib's the
selectors it can evaluate), split weights that sum to 100 and at most one path match per route.
A bad entry raises ``EntryError`` naming the field and what it accepts, with the texts of
Consul's own ``Validate`` methods where Consul has one, so the same entry is refused by both.
The entry is returned as given (Consul's CamelCase JSON), never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from meshlib.traffic.durations import parse_go_duration

__all__ = ["KINDS", "EntryError", "entry_key", "validate_entry"]

KINDS = ("service-resolver", "service-splitter", "service-router")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_PATHS = ("PathExact", "PathPrefix", "PathRegex")


class EntryError(ValueError):
    """A config entry that cannot be stored or used, with the reason."""


def entry_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    """``(kind, name)``, the identity of an entry."""
    return str(entry.get("Kind", "")), str(entry.get("Name", ""))


def _name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise EntryError(
            f"{what} {value!r} is not a valid service name: letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters"
        )


def _opt_name(entry: Mapping[str, Any], key: str, where: str) -> None:
    value = entry.get(key)
    if value not in (None, ""):
        _name(value, f"{where}.{key}")


def _duration(entry: Mapping[str, Any], key: str, where: str) -> None:
    value = entry.get(key)
    if value in (None, "", 0):
        return
    if not isinstance(value, str):
        raise EntryError(f"{where}.{key} must be a duration string such as '5s', got {value!r}")
    try:
        seconds = parse_go_duration(value)
    except ValueError as exc:
        raise EntryError(f"{where}.{key}: {exc}") from None
    if seconds < 0:
        raise EntryError(f"{where}.{key} must not be negative, got {value!r}")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EntryError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EntryError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _resolver(entry: Mapping[str, Any], check_filter: Callable[[str], None] | None) -> None:
    subsets = _mapping(entry.get("Subsets"), "Subsets")
    for name, subset in subsets.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise EntryError(f"Subset {name!r} is invalid: use a valid DNS subdomain name")
        body = _mapping(subset, f"Subsets[{name!r}]")
        text = body.get("Filter", "")
        if not isinstance(text, str):
            raise EntryError(f"Subsets[{name!r}].Filter must be a string")
        if text and check_filter is not None:
            try:
                check_filter(text)
            except ValueError as exc:
                raise EntryError(f"Bad Subset {name!r} Filter expression: {exc}") from None
    default = entry.get("DefaultSubset") or ""
    if default and default not in subsets:
        raise EntryError(f'DefaultSubset "{default}" is not a valid subset')
    redirect = entry.get("Redirect")
    if redirect is not None:
        body = _mapping(redirect, "Redirect")
        _opt_name(body, "Service", "Redirect")
        if entry.get("Failover") or subsets or default:
            raise EntryError("Redirect and Failover/Subsets/DefaultSubset cannot both be set")
        if not (body.get("Service") or body.get("ServiceSubset") or body.get("Datacenter")):
            raise EntryError("Redirect is empty: set Service, ServiceSubset or Datacenter")
    for key, failover in _mapping(entry.get("Failover"), "Failover").items():
        if key != "*" and key not in subsets:
            raise EntryError(f'Bad Failover["{key}"]: not a valid subset')
        body = _mapping(failover, f"Failover[{key!r}]")
        _opt_name(body, "Service", f"Failover[{key!r}]")
        for i, dc in enumerate(_list(body.get("Datacenters"), f"Failover[{key!r}].Datacenters")):
            _name(dc, f"Failover[{key!r}].Datacenters[{i}]")
        for i, t in enumerate(_list(body.get("Targets"), f"Failover[{key!r}].Targets")):
            _opt_name(_mapping(t, "target"), "Service", f"Failover[{key!r}].Targets[{i}]")
    for key in ("ConnectTimeout", "RequestTimeout"):
        _duration(entry, key, "service-resolver")
    _mapping(entry.get("LoadBalancer"), "LoadBalancer")


def _splitter(entry: Mapping[str, Any]) -> None:
    splits = _list(entry.get("Splits"), "Splits")
    if not splits:
        raise EntryError("no splits configured")
    total = 0.0
    for i, split in enumerate(splits):
        body = _mapping(split, f"Splits[{i}]")
        weight = body.get("Weight", 0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise EntryError(f"Splits[{i}].Weight must be a number within [0, 100]")
        if weight > 100:
            raise EntryError(f"Splits[{i}].Weight must be within [0, 100], got {weight}")
        _opt_name(body, "Service", f"Splits[{i}]")
        total += float(weight)
    if abs(total - 100.0) > 0.01:
        raise EntryError(f"the sum of all split weights must be 100, not {total:g}")


def _router(entry: Mapping[str, Any]) -> None:
    for i, route in enumerate(_list(entry.get("Routes"), "Routes")):
        where = f"Route[{i}]"
        body = _mapping(route, where)
        http = _mapping(_mapping(body.get("Match"), f"{where}.Match").get("HTTP"), "HTTP")
        given = [p for p in _PATHS if http.get(p)]
        if len(given) > 1:
            raise EntryError(f"{where} should only contain at most one of {', '.join(_PATHS)}")
        prefix = http.get("PathPrefix")
        exact = http.get("PathExact")
        for label, value in (("PathPrefix", prefix), ("PathExact", exact)):
            if value and (not isinstance(value, str) or not value.startswith("/")):
                raise EntryError(f"{where} {label} doesn't start with '/': {value!r}")
        regex = http.get("PathRegex")
        if regex:
            _regex(regex, f"{where}.PathRegex")
        for j, hdr in enumerate(_list(http.get("Header"), f"{where}.Header")):
            _matcher(hdr, f"{where} Header[{j}]", ("Exact", "Prefix", "Suffix", "Regex"))
        for j, q in enumerate(_list(http.get("QueryParam"), f"{where}.QueryParam")):
            _matcher(q, f"{where} QueryParam[{j}]", ("Exact", "Regex"))
        for j, method in enumerate(_list(http.get("Methods"), f"{where}.Methods")):
            if not isinstance(method, str) or not method.isalpha():
                raise EntryError(f"{where} Methods[{j}] is not an HTTP method: {method!r}")
        dest = _mapping(body.get("Destination"), f"{where}.Destination")
        _opt_name(dest, "Service", f"{where}.Destination")
        for key in ("RequestTimeout", "IdleTimeout"):
            _duration(dest, key, f"{where}.Destination")
        retries = dest.get("NumRetries", 0)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise EntryError(f"{where}.Destination.NumRetries must be a non-negative integer")
        for code in _list(dest.get("RetryOnStatusCodes"), f"{where}.RetryOnStatusCodes"):
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                raise EntryError(f"{where}.Destination.RetryOnStatusCodes: bad code {code!r}")


def _regex(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise EntryError(f"{where} must be a string")
    try:
        re.compile(value)
    except re.error as exc:
        raise EntryError(f"{where} is not a valid regular expression: {exc}") from None


def _matcher(value: Any, where: str, kinds: tuple[str, ...]) -> None:
    body = _mapping(value, where)
    if not isinstance(body.get("Name"), str) or not body.get("Name"):
        raise EntryError(f"{where} missing required Name field")
    given = [k for k in (*kinds, "Present") if body.get(k)]
    if len(given) > 1:
        raise EntryError(f"{where} should only contain one of Present, {', '.join(kinds)}")
    if body.get("Regex"):
        _regex(body["Regex"], f"{where}.Regex")


def validate_entry(
    entry: Any, *, check_filter: Callable[[str], None] | None = None
) -> Mapping[str, Any]:
    """Return ``entry`` if it is a valid resolver, splitter or router; raise ``EntryError``.

    ``check_filter`` raises ``ValueError`` for a subset filter the caller cannot evaluate."""
    if not isinstance(entry, Mapping):
        raise EntryError(f"a config entry must be a JSON object, got {type(entry).__name__}")
    kind, _ = entry_key(entry)
    if kind not in KINDS:
        raise EntryError(f"invalid config entry kind: {kind!r} (meshlib knows {', '.join(KINDS)})")
    _name(entry.get("Name"), "Name")
    if kind == "service-resolver":
        _resolver(entry, check_filter)
    elif kind == "service-splitter":
        _splitter(entry)
    else:
        _router(entry)
    return entry
