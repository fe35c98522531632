"""Traffic management: Consul's service-router, -splitter and -resolver, followed in-process.

Like a proxyless gRPC client following xDS, meshlib reads a service's compiled discovery chain
and applies it per request. ``entries`` validates the three config entry kinds, ``compiler``
compiles them into Consul's discovery-chain JSON (FakeConsul and static discovery use it),
``chain`` reads that JSON into frozen objects and makes the per-request choice, ``match``
holds the route conditions, ``bexpr`` Consul's filter language (for subsets, and FakeConsul's
``?filter=``), ``schema`` what a subset filter can see of an endpoint, and ``durations`` Go's
duration syntax. Everything here is I/O-free and imports L0 only.
"""

from meshlib.traffic.chain import Chain, ChainTarget, Choice, Route, Split, parse_chain
from meshlib.traffic.compiler import CompileError, compile_chain, target_id
from meshlib.traffic.entries import KINDS, EntryError, entry_key, validate_entry

__all__ = [
    "KINDS",
    "Chain",
    "ChainTarget",
    "Choice",
    "CompileError",
    "EntryError",
    "Route",
    "Split",
    "compile_chain",
    "entry_key",
    "parse_chain",
    "target_id",
    "validate_entry",
]
