"""Which URL hosts name mesh services, and which go straight out untouched.

The rules, in order (first match wins; the result is cached per host string):

1. IP literals and ``localhost`` (and ``*.localhost``) are never service names.
2. Hosts listed in ``MESH_PASSTHROUGH_HOSTS`` are never service names: this is how a
   docker-compose name such as ``db`` or ``redis`` is kept out of the mesh.
3. A name declared by the discovery (for example in ``MESH_STATIC_ENDPOINTS``) is a service,
   whatever its shape (``users.internal`` works if declared).
4. Consul DNS form is a service: ``users.service.consul``, ``<tag>.users.service.consul``,
   ``users.service.<dc>.consul`` and ``<tag>.users.service.<dc>.consul``.
5. Any other single-label host (no dot) is a service name.
6. Everything else (``api.example.com``) passes through to the ordinary transport with no mesh
   behaviour and no mesh headers, so no trace context or deadline leaks to third parties.

Rule 5 is what users of Consul DNS and Kubernetes short names expect; rule 2 is the escape hatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from meshlib.discovery.base import Target
from meshlib.endpoint import is_ip_literal

__all__ = ["Addressing"]

_CACHE_LIMIT = 4096


class Addressing:
    """Classifies URL hosts as mesh targets (``Target``) or pass-through (``None``)."""

    def __init__(
        self,
        *,
        passthrough: Iterable[str] = (),
        declares: Callable[[str], bool] = lambda host: False,
        consul_domain: str = "consul",
    ) -> None:
        self._passthrough = frozenset(h.lower().rstrip(".") for h in passthrough)
        self._declares = declares
        self._domain = consul_domain.lower().strip(".")
        self._cache: dict[str, Target | None] = {}
        self._declared: dict[str, Target] = {}

    def target(self, host: str) -> Target | None:
        """The mesh target ``host`` names, or None when it is not a mesh name."""
        if self._declares(host) and host not in self._passthrough:
            # Asked every time, because a reloaded endpoints file may add or drop a name.
            return self._declared.get(host) or self._declared.setdefault(host, Target(host))
        try:
            return self._cache[host]
        except KeyError:
            pass
        result = self._classify(host)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[host] = result
        return result

    def _classify(self, host: str) -> Target | None:
        name = host.lower().rstrip(".")
        if not name or is_ip_literal(name) or name == "localhost" or name.endswith(".localhost"):
            return None
        if name in self._passthrough:
            return None
        if name != host and self._declares(name):
            return Target(name)
        labels = name.split(".")
        if len(labels) == 1:
            return Target(name)
        if labels[-1] == self._domain and "service" in labels:
            return _consul_form(labels[:-1])
        return None


def _consul_form(labels: list[str]) -> Target | None:
    """``[tag.]svc.service[.dc]`` (the ``.consul`` suffix already removed)."""
    i = labels.index("service")
    before, after = labels[:i], labels[i + 1 :]
    if len(after) > 1 or not 1 <= len(before) <= 2:
        return None
    dc = after[0] if after else None
    if len(before) == 2:
        return Target(before[1], tag=before[0], dc=dc)
    return Target(before[0], dc=dc)
