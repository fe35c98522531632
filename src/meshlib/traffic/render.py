"""A discovery chain as text, for ``meshlib resolve``: routes, the split, and each subset.

Operators ask "where does a request to this service go?"; the answer is the chain in force,
in the order it is applied (routes, then the split, then each target's subset with the
endpoints its filter matches right now, and its failover), followed by what meshlib could not
honour. Plain lines, no colour, so it reads the same in a terminal and in a bug report.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlib.endpoint import Endpoint
from meshlib.traffic.chain import Chain, ChainTarget, Split

__all__ = ["render_chain"]


def _step(step: ChainTarget | Split | None) -> str:
    if step is None:
        return "?"
    if isinstance(step, ChainTarget):
        return step.id
    total = step.cumulative[-1]
    return ", ".join(
        f"{w * 100 / total:g}% {t.id}" for t, w in zip(step.targets, step.weights, strict=True)
    )


def render_chain(chain: Chain, endpoints: Sequence[Endpoint]) -> list[str]:
    """The lines ``meshlib resolve`` prints under the endpoints (``endpoints``: the service's)."""
    lines = [f"traffic management: discovery chain of {chain.service}"]
    if chain.routes:
        lines.append("  routes (first match wins):")
        for r in chain.routes:
            match = r.match.describe() if r.match is not None else "everything"
            extra = "".join(
                f" {label}={value}"
                for label, value in (("timeout", r.timeout), ("retries", r.retries))
                if value is not None
            )
            lines.append(f"    {r.index}: {match} -> {_step(r.step)}{extra}")
    else:
        lines.append(f"  every request -> {_step(chain.start)}")
    lines.append("  targets:")
    for tid, t in chain.targets.items():
        where = f" in dc {t.dc}" if t.dc else ""
        rule = f" filter {t.filter!r}" if t.filter else ""
        if t.dc is None and t.service == chain.service:
            matched = [e.address for e in endpoints if t.admits(e)]
            found = f": {len(matched)} endpoint(s) {' '.join(matched)}".rstrip()
        else:
            found = ""
        fail = f"; failover {', '.join(f.id for f in t.failover)}" if t.failover else ""
        lines.append(f"    {tid}{where}{rule}{found}{fail}")
    for problem in chain.problems:
        lines.append(f"  not honoured: {problem}")
    return lines
