"""Drawing finished SDK spans as an indented tree, for the demo and for debugging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_trace_tree"]


def format_trace_tree(spans: list[Any]) -> list[str]:
    """Lines drawing finished SDK spans as a tree (for the demo and for debugging)."""
    by_parent: dict[int | None, list[Any]] = {}
    ids = {s.context.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def describe(s: Any) -> str:
        a: Mapping[str, Any] = s.attributes or {}
        ms = (s.end_time - s.start_time) / 1e6
        bits = [f"{s.name} [{s.kind.name}] {ms:.1f} ms"]
        if "network.peer.address" in a:
            bits.append(f"-> {a['network.peer.address']}:{a['network.peer.port']}")
        if "http.response.status_code" in a:
            bits.append(str(a["http.response.status_code"]))
        if "http.request.resend_count" in a:
            bits.append(f"resend_count={a['http.request.resend_count']}")
        if "error.type" in a:
            bits.append(f"error.type={a['error.type']}")
        return "  ".join(bits)

    def walk(parent: int | None, prefix: str) -> None:
        children = by_parent.get(parent, [])
        for i, s in enumerate(children):
            last = i == len(children) - 1
            branch = "" if parent is None else ("└─ " if last else "├─ ")
            lines.append(prefix + branch + describe(s))
            inner = prefix + ("" if parent is None else ("   " if last else "│  "))
            for e in s.events:
                delay = (e.attributes or {}).get("mesh.retry.delay_s")
                extra = f" after {delay * 1000:.0f} ms" if delay is not None else ""
                lines.append(inner + f"   · {e.name}{extra}")
            walk(s.context.span_id, inner)

    walk(None, "")
    return lines
