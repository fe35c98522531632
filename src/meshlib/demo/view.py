"""How the demo shows itself: a live terminal view (rich), or plain text when not a terminal.

The demo's acts only describe what to show: a heading, notes, tables whose rows change while
traffic runs, and a closing summary. On a terminal with ``rich`` installed
(``pip install 'meshlib[demo]'``) the tables update in place once a second; otherwise (a pipe, a
CI log, a test) the same content is written as plain text, with timelines printed row by row as
they happen and other tables printed once, final. Nothing here knows about meshlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TextIO

__all__ = ["LiveTable", "PlainView", "RichView", "View", "make_view"]


class LiveTable(Protocol):
    def update(self, rows: Sequence[Sequence[str]]) -> None: ...

    def close(self) -> None: ...


class View(Protocol):
    def heading(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def table(self, title: str, columns: Sequence[str], *, timeline: bool) -> LiveTable: ...

    def summary(self, title: str, lines: Sequence[str]) -> None: ...


def _format(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(
            cell.ljust(w) if i == 0 or i == len(cells) - 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=False))
        )

    return [line(columns), *(line(r) for r in rows)]


class _PlainTable:
    def __init__(self, out: TextIO, title: str, columns: Sequence[str], timeline: bool) -> None:
        self._out = out
        self._columns = list(columns)
        self._timeline = timeline
        self._rows: list[Sequence[str]] = []
        self._printed = 0
        out.write(f"\n{title}\n")
        if timeline:
            out.write(_format(self._columns, [])[0] + "\n")
            out.flush()

    def update(self, rows: Sequence[Sequence[str]]) -> None:
        self._rows = list(rows)
        if self._timeline:
            lines = _format(self._columns, self._rows)
            for text in lines[1 + self._printed :]:
                self._out.write(text + "\n")
            self._printed = len(self._rows)
            self._out.flush()

    def close(self) -> None:
        if not self._timeline:
            self._out.write("\n".join(_format(self._columns, self._rows)) + "\n")
            self._out.flush()


class PlainView:
    """Plain text, for pipes, logs and tests."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def heading(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def note(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def table(self, title: str, columns: Sequence[str], *, timeline: bool) -> LiveTable:
        return _PlainTable(self._out, title, columns, timeline)

    def summary(self, title: str, lines: Sequence[str]) -> None:
        self._out.write(f"\n{title}\n" + "".join(f"  {line}\n" for line in lines))
        self._out.flush()


class _RichTable:
    def __init__(self, view: RichView, title: str, columns: Sequence[str]) -> None:
        self._rich = view.rich
        self._title = title
        self._columns = list(columns)
        self._live = self._rich["Live"](
            self._render([]), console=view.console, refresh_per_second=4, transient=False
        )
        self._live.start()

    def _render(self, rows: Sequence[Sequence[str]]) -> Any:
        table = self._rich["Table"](title=self._title, title_justify="left", expand=False)
        for i, col in enumerate(self._columns):
            table.add_column(col, justify="left" if i in (0, len(self._columns) - 1) else "right")
        for row in rows:
            styled = [_style(cell) for cell in row]
            table.add_row(*styled)
        return table

    def update(self, rows: Sequence[Sequence[str]]) -> None:
        self._live.update(self._render(rows))

    def close(self) -> None:
        self._live.stop()


def _style(cell: str) -> str:
    lowered = cell.lower()
    if any(w in lowered for w in ("dead", "stale", "ejected", "fail")):
        return f"[bold red]{cell}[/]"
    if any(w in lowered for w in ("probing", "maintenance", "freez")):
        return f"[yellow]{cell}[/]"
    if lowered in ("alive", "revived") or "revived" in lowered:
        return f"[green]{cell}[/]"
    return cell.replace("[", "\\[")


class RichView:
    """A live terminal view built with rich."""

    def __init__(self, out: TextIO, rich: dict[str, Any]) -> None:
        self.rich = rich
        self.console = rich["Console"](file=out)

    def heading(self, text: str) -> None:
        self.console.rule(f"[bold]{text}")

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def table(self, title: str, columns: Sequence[str], *, timeline: bool) -> LiveTable:
        return _RichTable(self, f"[bold]{title}", columns)

    def summary(self, title: str, lines: Sequence[str]) -> None:
        body = "\n".join(lines)
        self.console.print(self.rich["Panel"](body, title=f"[bold]{title}", expand=False))


def make_view(out: TextIO) -> View:
    """A rich live view on a terminal when rich is installed, else plain text."""
    isatty = getattr(out, "isatty", lambda: False)()
    if isatty:
        try:
            from rich.console import Console
            from rich.live import Live
            from rich.panel import Panel
            from rich.table import Table
        except ImportError:
            return PlainView(out)
        return RichView(out, {"Console": Console, "Live": Live, "Panel": Panel, "Table": Table})
    return PlainView(out)
