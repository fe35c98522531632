"""Package exports loaded on first use (PEP 562), so importing a package costs only its name.

Why: on CPython 3.11 every dataclass costs 0.5-1 ms to create, and a package ``__init__`` that
re-exports its modules makes whoever imports one of them pay for all of them: ``import meshlib``
would build the inbound admission, Connect and hedging classes a plain client never uses. A
package lists its public names and the module each lives in; the module is imported when the
name is first read, and the name is kept in the package from then on. Imports nothing of
meshlib: L0.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["load"]


def load(
    package: str, exports: Mapping[str, str], name: str, into: MutableMapping[str, Any]
) -> Any:
    """``package.<exports[name]>.name``, imported now and stored in ``into`` (the package's
    globals) so that later reads do not come back here."""
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
    into[name] = value
    return value
