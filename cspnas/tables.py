"""Printing rich tables so that no cell is ever cut short.

rich fits a table to the console (80 columns when output is not a terminal, or $COLUMNS) and,
when it cannot, truncates cells with "…": `cspnas inspect cspresnet50 | cat` printed `21,616…`.
Here numbers (right-justified columns) keep their full width, text wraps between words only,
and when even that does not fit, the table is printed wider than the console.
"""
from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

_UNBOUNDED = 100_000  # measure as if the console were this wide: the table's true minimum width


def print_table(table: Table, console: Console | None = None) -> None:
    """Print `table` on `console` (default: stdout) with every number and every word whole."""
    console = console or Console()
    lows, highs, wraps = [], [], []
    for column in table.columns:
        numbers = column.justify == "right"
        lines = [line for c in (column.header, *column.cells) if isinstance(c, str)
                 for line in Text.from_markup(c).plain.splitlines()]
        wraps.append(not numbers and not column.no_wrap)
        pieces = [word for line in lines for word in line.split()] if wraps[-1] else lines
        lows.append(max((Text(p).cell_len for p in pieces), default=1))
        highs.append(max((Text(p).cell_len for p in lines), default=1))
        column.min_width = lows[-1]
        column.no_wrap = not wraps[-1]
        column.overflow = "fold"  # belt and braces: never "…"
    need = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).minimum
    if need - sum(lows) + sum(highs) > console.width:
        # rich's own shrinking ignores minimum widths, so fix every column's width here: the
        # minimum, plus what the console has to spare shared among the columns that may wrap
        spare = max(0, console.width - need)
        slack = [h - lo if w else 0 for lo, h, w in zip(lows, highs, wraps)]
        total = sum(slack) or 1
        for column, lo, s in zip(table.columns, lows, slack):
            column.width = lo + min(s, spare * s // total)
    width = console.width
    console.width = max(width, need)  # wider than a narrow terminal beats a wrong number
    try:
        console.print(table)
    finally:
        console.width = width
