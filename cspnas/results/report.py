"""Summaries of a run: its totals and its Pareto front as a table, JSON or CSV."""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import pandas as pd
from rich.console import Console
from rich.table import Table

from cspnas.errors import CspnasError
from cspnas.results.rundir import Run
from cspnas.tables import print_table
from cspnas.units import format_count, format_duration_ms

# sort key -> (front column, ascending)
SORTS = {"accuracy": ("accuracy", False), "macs": ("macs", True), "latency": ("latency_ms", True),
         "params": ("params", True)}
FRONT_REPORT_COLUMNS = ("trial", "arch_summary", "accuracy", "macs", "params", "latency_ms", "latency_iqr_ms",
                        "knee", "weights")


@dataclass(frozen=True)
class RunTotals:
    """Counts per trial state, the final hypervolume and the wall time of a run."""

    trials: int
    complete: int
    infeasible: int
    pruned: int
    failed: int
    running: int
    interrupted: int
    front_size: int
    hypervolume: float | None  # None until a trial completes
    wall_seconds: float | None  # first started_at to last completed_at; None without timestamps

    def to_dict(self) -> dict:
        return asdict(self)


def run_totals(run: Run) -> RunTotals:
    states = run.trials["state"].value_counts()
    hv = run.trials["hypervolume"].dropna()
    # hypervolume never decreases with fixed refs; max() is right even if trials finish out of order
    return RunTotals(
        trials=len(run.trials),
        **{s: int(states.get(s, 0)) for s in ("complete", "infeasible", "pruned", "failed", "running", "interrupted")},
        front_size=len(run.front),
        hypervolume=float(hv.max()) if len(hv) else None,
        wall_seconds=_wall_seconds(run.trials),
    )


def _wall_seconds(trials: pd.DataFrame) -> float | None:
    start = pd.to_datetime(trials["started_at"], errors="coerce", utc=True, format="ISO8601").min()
    end = pd.to_datetime(trials["completed_at"], errors="coerce", utc=True, format="ISO8601").max()
    if pd.isna(start) or pd.isna(end):
        return None
    return max(0.0, (end - start).total_seconds())


def front_table(run: Run, sort: str = "accuracy") -> pd.DataFrame:
    """The front's report columns, sorted best-first by `sort` (ties: trial number)."""
    if sort not in SORTS:
        raise CspnasError(f"unknown sort key {sort!r}; use one of {', '.join(SORTS)}")
    column, ascending = SORTS[sort]
    df = run.front.reindex(columns=list(FRONT_REPORT_COLUMNS))
    return df.sort_values([column, "trial"], ascending=[ascending, True], kind="stable").reset_index(drop=True)


def report_dict(run: Run, sort: str = "accuracy") -> dict:
    """Everything the report shows, JSON-ready (NaN -> None)."""
    front = front_table(run, sort)
    records = [{k: _json_value(v) for k, v in row.items()} for row in front.to_dict(orient="records")]
    return {"run": run.name, "path": str(run.path), "dataset": run.setting("dataset"),
            "totals": run_totals(run).to_dict(), "sort": sort, "front": records}


def front_csv(run: Run, sort: str = "accuracy") -> str:
    buffer = io.StringIO()
    front_table(run, sort).to_csv(buffer, index=False)
    return buffer.getvalue()


def print_report(run: Run, sort: str = "accuracy", console: Console | None = None) -> None:
    console = console or Console()
    totals = run_totals(run)
    front = front_table(run, sort)
    title = f"Pareto front of {run.name}" + (f" ({run.setting('dataset')})" if run.setting("dataset") else "")
    table = Table(title=title, caption=f"sorted by {sort}; ◆ = knee (closest to the ideal point)")
    for col, justify in (("trial", "right"), ("architecture", "left"), ("accuracy", "right"), ("MACs", "right"),
                         ("params", "right"), ("latency ± IQR", "right"), ("knee", "center")):
        # numbers must never be cut; on a narrow terminal the summary wraps between stages instead
        table.add_column(col, justify=justify, no_wrap=col != "architecture")
    for row in front.itertuples(index=False):
        latency = f"{format_duration_ms(row.latency_ms)} ± {format_duration_ms(row.latency_iqr_ms)}"
        table.add_row(str(row.trial), str(row.arch_summary), _pct(row.accuracy), format_count(row.macs),
                      format_count(row.params), latency, "◆" if row.knee else "")
    if len(front):
        print_table(table, console)
    else:
        console.print(f"[yellow]{run.name}: no feasible complete trial yet, so the Pareto front is empty[/yellow]")
    console.print(totals_line(totals))


def totals_line(t: RunTotals) -> str:
    hv = "-" if t.hypervolume is None else f"{t.hypervolume:.4f}"
    extra = "".join(f", {n} {s}" for s, n in (("running", t.running), ("interrupted", t.interrupted)) if n)
    return (f"{t.trials} trials: {t.complete} complete, {t.infeasible} infeasible, {t.pruned} pruned, "
            f"{t.failed} failed{extra}; front {t.front_size}; hypervolume {hv}; "
            f"wall time {format_seconds(t.wall_seconds)}")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else (f"{m}m{s:02d}s" if m else f"{s}s")


def _pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _json_value(value):
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
