"""What the CLI prints when stdout is not a terminal: every number whole, at any width."""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console
from rich.table import Table

from cspnas.tables import print_table
from run_fixture import make_run


def _cli(*args: str, columns: int | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    proc = subprocess.run([sys.executable, "-m", "cspnas.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("columns", [None, 40])
def test_inspect_piped_prints_whole_numbers(columns):
    out = _cli("inspect", "cspresnet50", "--input-size", "224", "--no-latency", columns=columns)
    # README's reference numbers (timm's parameter count, fvcore's MACs), exactly as printed
    assert "21,616,168" in out and "3,476,414,464" in out
    for number in ("9,536", "227,840", "1,053,952", "5,913,088", "13,386,752", "1,025,000", "119,619,584"):
        assert re.search(rf"(?<![\d,]){number}(?![\d,])", out), number
    assert "…" not in out
    assert "csp/bottleneck" in out  # words are never broken either


def test_presets_and_space_piped_at_a_narrow_width():
    out = _cli("presets", columns=30)
    assert "…" not in out and "21,616,168" in out and "41,609,928" in out
    out = _cli("space", "default", columns=30)
    assert "…" not in out and "60,466,176,000" in out
    assert "stages[0].split_ratio" in out and "fusion_first," in out


def test_report_piped_at_a_narrow_width(tmp_path):
    run = make_run(tmp_path, 8)
    wide = _cli("report", str(run), "--csv", columns=None)
    out = _cli("report", str(run), columns=30)
    assert "…" not in out
    rows = list(csv.DictReader(io.StringIO(wide)))
    assert rows
    for row in rows:  # every front member's trial number and summary's stages appear whole
        assert re.search(rf"(?m)^\S\s+{row['trial']}\s", out)
        for stage in row["arch_summary"].split():
            assert stage in out


@pytest.mark.parametrize("width", [20, 50, 200])
def test_print_table_never_cuts_a_cell(width):
    table = Table(title="t")
    table.add_column("name")
    table.add_column("value", justify="right")
    table.add_row("a rather long description of a thing", "1,234,567,890")
    table.add_row("unbreakable_identifier_of_some_length", "12.345 ± 0.678")
    console = Console(width=width, record=True, file=open(os.devnull, "w"))
    print_table(table, console)
    text = console.export_text()
    assert "1,234,567,890" in text and "12.345 ± 0.678" in text and "unbreakable_identifier_of_some_length" in text
    assert "…" not in text
    lines = [line for line in text.splitlines() if line.startswith(("┏", "│", "└"))]
    assert len({len(line) for line in lines}) == 1  # every row closes with its right border
    assert all(line.rstrip().endswith(("┓", "│", "┘")) for line in lines)
    assert console.width == width  # the caller's console is left as it was
