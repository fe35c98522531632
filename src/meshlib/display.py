"""How the command line shows configuration values: compact, by value, and never a secret.

``meshlib config`` lists every setting with where it came from; these helpers decide whether a
value is the default (by value, also for tenacity's waits, which have no ``__eq__``) and render
it on one line, leaving out fields declared ``repr=False`` (tokens) and credentials in URLs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from meshlib.endpoint import Endpoint
from meshlib.retry.policy import describe_wait

__all__ = ["same_value", "show_value"]

_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")


def same_value(a: object, b: object) -> bool:
    """Equal by value, also for policy objects without ``__eq__`` (tenacity's wait)."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return all(
            same_value(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if type(a) is type(b) and hasattr(a, "__dict__") and not isinstance(a, type):
        return same_value(vars(a), vars(b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def show_value(value: object) -> str:
    """A value for the listing: compact, and never a field declared ``repr=False`` (secrets)."""
    if value is None:
        return "-"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, Endpoint):
            return value.address
        shown = [
            f"{f.name}={show_value(getattr(value, f.name))}"
            for f in dataclasses.fields(value)
            if f.repr
        ]
        return " ".join(shown)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={show_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, tuple | list):
        return ",".join(show_value(v) for v in value) or "-"
    if isinstance(value, frozenset | set):
        return ",".join(sorted(map(str, value)))
    if (wait := describe_wait(value)) is not None:
        return wait
    return _URL_CREDENTIALS.sub(r"\1<redacted>@", str(value))
