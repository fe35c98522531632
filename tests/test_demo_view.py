"""The demo's two views: plain text for pipes, a live rich view for terminals."""

import io

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from meshlib.demo.view import PlainView, RichView, make_view


def test_plain_view_prints_timelines_as_they_grow_and_tables_once() -> None:
    out = io.StringIO()
    view = PlainView(out)
    timeline = view.table("Timeline", ["t", "sent", "state"], timeline=True)
    timeline.update([["1s", "10", "alive"]])
    first = out.getvalue()
    timeline.update([["1s", "10", "alive"], ["2s", "9", "dead"]])
    timeline.close()
    assert "1s" in first
    assert "2s" not in first
    assert out.getvalue().count("1s") == 1
    table = view.table("Shares", ["endpoint", "requests"], timeline=False)
    table.update([["alpha", "1"]])
    table.update([["alpha", "2"]])
    assert "alpha" not in out.getvalue()
    table.close()
    assert out.getvalue().count("alpha") == 1
    view.summary("Done", ["ok"])
    assert out.getvalue().endswith("Done\n  ok\n")


def test_rich_view_renders_live_tables_and_panels() -> None:
    out = io.StringIO()
    view = RichView(out, {"Console": Console, "Live": Live, "Panel": Panel, "Table": Table})
    table = view.table("Resilience", ["t", "state"], timeline=True)
    table.update([["1s", "dead"]])
    table.close()
    view.summary("What the mesh did", ["callers saw 0 errors"])
    text = out.getvalue()
    assert "Resilience" in text
    assert "dead" in text
    assert "callers saw 0 errors" in text


def test_non_terminal_output_gets_the_plain_view() -> None:
    assert isinstance(make_view(io.StringIO()), PlainView)
