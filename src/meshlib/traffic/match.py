"""A ``service-router`` route's match: path, headers, query parameters and method, as Envoy does.

The rules are those Consul hands to Envoy (``ServiceRouteHTTPMatch``): a path match is exact,
prefix or a regular expression, tested against the path as sent (percent-encoding kept) without
its query string, and a regular expression must match the whole path (Envoy's ``safe_regex``).
A header matcher tests presence, an exact value, a prefix, a suffix or a whole-value regular
expression, optionally inverted; a query matcher presence, an exact value or a regular
expression; ``Methods`` lists the methods that match (any if empty). Every condition given
must hold. Python's ``re`` stands in for RE2: the two agree on the syntax routes use, and an
expression that does not compile is refused when the chain is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Check", "RouteMatch", "Values", "parse_match"]


class Values(Protocol):
    """Headers or query parameters: ``get`` by name (header names come lower-cased)."""

    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Matcher:
    name: str
    kind: str  # present, exact, prefix, suffix, regex
    value: str
    regex: re.Pattern[str] | None
    invert: bool

    def test(self, values: Values) -> bool:
        got = values.get(self.name)
        if got is None:
            hit = False
        elif self.kind == "present":
            hit = True
        elif self.kind == "exact":
            hit = got == self.value
        elif self.kind == "prefix":
            hit = got.startswith(self.value)
        elif self.kind == "suffix":
            hit = got.endswith(self.value)
        else:
            assert self.regex is not None
            hit = self.regex.fullmatch(got) is not None
        return hit != self.invert


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """One route's conditions; ``matches`` is called once per request per route tried."""

    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: re.Pattern[str] | None = None
    headers: tuple[_Matcher, ...] = ()
    query: tuple[_Matcher, ...] = ()
    methods: frozenset[str] = frozenset()

    def matches(self, method: str, path: str, headers: Values, query: Values) -> bool:
        if self.methods and method not in self.methods:
            return False
        prefix = self.path_prefix
        if prefix is not None and not path.startswith(prefix):
            return False
        exact = self.path_exact
        if exact is not None and path != exact:
            return False
        regex = self.path_regex
        if regex is not None and regex.fullmatch(path) is None:
            return False
        for m in self.headers:
            if not m.test(headers):
                return False
        for m in self.query:  # noqa: SIM110 - a loop: all() with a generator costs more here
            if not m.test(query):
                return False
        return True

    def compiled(self) -> Check:
        """``matches`` as one closure holding only this route's conditions (built once per
        chain version): a route tested on every request pays for nothing it does not test."""
        checks: list[Check] = []
        if self.methods:
            methods = self.methods
            checks.append(lambda m, p, h, q: m in methods)
        if self.path_prefix is not None:
            prefix = self.path_prefix
            checks.append(lambda m, p, h, q: p.startswith(prefix))
        if self.path_exact is not None:
            exact = self.path_exact
            checks.append(lambda m, p, h, q: p == exact)
        if self.path_regex is not None:
            full = self.path_regex.fullmatch
            checks.append(lambda m, p, h, q: full(p) is not None)
        checks.extend(_check(matcher, header=True) for matcher in self.headers)
        checks.extend(_check(matcher, header=False) for matcher in self.query)
        if len(checks) == 1:
            return checks[0]
        every = tuple(checks)

        def all_of(m: str, p: str, h: Values, q: Values) -> bool:
            for check in every:  # noqa: SIM110 - a loop: all() with a generator costs more
                if not check(m, p, h, q):
                    return False
            return True

        return all_of

    def describe(self) -> dict[str, Any]:
        """The conditions as plain JSON, for ``mesh_state()``."""
        out: dict[str, Any] = {}
        if self.path_exact is not None:
            out["path_exact"] = self.path_exact
        if self.path_prefix is not None:
            out["path_prefix"] = self.path_prefix
        if self.path_regex is not None:
            out["path_regex"] = self.path_regex.pattern
        for label, group in (("headers", self.headers), ("query", self.query)):
            if group:
                out[label] = [
                    f"{m.name} {'not ' if m.invert else ''}{m.kind} {m.value}".rstrip()
                    for m in group
                ]
        if self.methods:
            out["methods"] = sorted(self.methods)
        return out


Check = Callable[[str, str, Values, Values], bool]
"""``(method, path, headers, query) -> matched``."""


def _check(matcher: _Matcher, *, header: bool) -> Check:
    name, value, invert = matcher.name, matcher.value, matcher.invert
    if matcher.kind == "exact":
        if header:
            return lambda m, p, h, q: (h.get(name) == value) != invert
        return lambda m, p, h, q: (q.get(name) == value) != invert
    if matcher.kind == "present":
        if header:
            return lambda m, p, h, q: (h.get(name) is not None) != invert
        return lambda m, p, h, q: (q.get(name) is not None) != invert
    test = matcher.test
    if header:
        return lambda m, p, h, q: test(h)
    return lambda m, p, h, q: test(q)


def _compile(text: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"{where}: {text!r} is not a valid regular expression: {exc}") from None


def _matchers(
    raw: Any, where: str, kinds: tuple[str, ...], lower: bool = False
) -> tuple[_Matcher, ...]:
    out = []
    for i, spec in enumerate(raw or []):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("Name"), str):
            raise ValueError(f"{where}[{i}] needs a Name")
        name = spec["Name"].lower() if lower else spec["Name"]
        kind, value = "present", ""
        for key in kinds:
            given = spec.get(key)
            if given:
                kind, value = key.lower(), str(given)
                break
        regex = _compile(value, f"{where}[{i}].Regex") if kind == "regex" else None
        out.append(_Matcher(name, kind, value, regex, bool(spec.get("Invert", False))))
    return tuple(out)


def parse_match(raw: Any) -> RouteMatch | None:
    """A route's ``Match`` object; None when it matches everything (``/`` or nothing given)."""
    http = raw.get("HTTP") if isinstance(raw, Mapping) else None
    if not isinstance(http, Mapping):
        return None
    prefix = http.get("PathPrefix") or None
    regex = http.get("PathRegex") or None
    match = RouteMatch(
        path_exact=http.get("PathExact") or None,
        path_prefix=None if prefix == "/" else prefix,
        path_regex=_compile(regex, "PathRegex") if regex else None,
        headers=_matchers(
            http.get("Header"), "Header", ("Exact", "Prefix", "Suffix", "Regex"), lower=True
        ),
        query=_matchers(http.get("QueryParam"), "QueryParam", ("Exact", "Regex")),
        methods=frozenset(str(m).upper() for m in http.get("Methods") or ()),
    )
    return None if match == RouteMatch() else match
