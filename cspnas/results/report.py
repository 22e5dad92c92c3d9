"""Summaries of a run: its totals and its Pareto front as a table, JSON or CSV."""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import pandas as pd
from rich.console import Console
from rich.table import Table

from cspnas.errors import CspnasError
from cspnas.objectives import COLUMNS, OBJECTIVES, Spec, run_noise
from cspnas.run_format import Run
from cspnas.tables import print_table

FRONT_REPORT_COLUMNS = ("trial", "arch_summary", *COLUMNS, "latency_iqr_ms", "knee", "weights", "confirmed",
                        "marginal")
MARGINAL_NOTE = "marginal = within measurement noise of a limit"


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
    driver_busy_share: float | None = None  # of the last search session (config.yaml `driver`); None before

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
        driver_busy_share=_driver_busy(run.config),
    )


def _driver_busy(config: dict) -> float | None:
    sessions = config.get("driver")
    last = sessions[-1] if isinstance(sessions, list) and sessions and isinstance(sessions[-1], dict) else {}
    share = last.get("busy_share")
    return float(share) if isinstance(share, (int, float)) and not isinstance(share, bool) else None


def _wall_seconds(trials: pd.DataFrame) -> float | None:
    start = pd.to_datetime(trials["started_at"], errors="coerce", utc=True, format="ISO8601").min()
    end = pd.to_datetime(trials["completed_at"], errors="coerce", utc=True, format="ISO8601").max()
    if pd.isna(start) or pd.isna(end):
        return None
    return max(0.0, (end - start).total_seconds())


def front_table(run: Run, sort: str = "accuracy") -> pd.DataFrame:
    """The front's report columns, sorted best-first by `sort` (ties: trial number)."""
    if sort not in OBJECTIVES:
        raise CspnasError(f"unknown sort key {sort!r}; use one of {', '.join(OBJECTIVES)}")
    spec = OBJECTIVES[sort]
    df = run.front.reindex(columns=list(FRONT_REPORT_COLUMNS))
    for flag in ("confirmed", "marginal"):  # absent in runs written before the confirmation pass
        df[flag] = df[flag].eq(True)
    ordered = df.sort_values([spec.column, "trial"], ascending=[spec.ascending, True], kind="stable")
    return ordered.reset_index(drop=True)


def shown_objectives(front: pd.DataFrame) -> list[Spec]:
    """The objectives a front table shows: every one measured (older runs lack some)."""
    return [s for s in OBJECTIVES.values() if s.column in front and front[s.column].notna().any()]


def report_dict(run: Run, sort: str = "accuracy") -> dict:
    """Everything the report shows, JSON-ready (NaN -> None)."""
    front = front_table(run, sort)
    records = [{k: _json_value(v) for k, v in row.items()} for row in front.to_dict(orient="records")]
    return {"run": run.name, "path": str(run.path), "dataset": run.setting("dataset"),
            "objectives": list(run.objectives), "totals": run_totals(run).to_dict(), "sort": sort, "front": records}


def front_csv(run: Run, sort: str = "accuracy") -> str:
    buffer = io.StringIO()
    front_table(run, sort).to_csv(buffer, index=False)
    return buffer.getvalue()


def print_report(run: Run, sort: str = "accuracy", console: Console | None = None) -> None:
    console = console or Console()
    totals = run_totals(run)
    front = front_table(run, sort)
    title = f"Pareto front of {run.name}" + (f" ({run.setting('dataset')})" if run.setting("dataset") else "")
    marked = bool(front["marginal"].any())
    points = run_noise(run.config).get("accuracy")  # the front's accuracy ties (cspnas.pareto, "Measurement noise")
    table = Table(title=title, caption=f"sorted by {sort}; ◆ = knee (closest to the ideal point)"
                  + (f"; {MARGINAL_NOTE}" if marked else "")
                  + (f"; accuracies within {points:g} points (or the validation size's binomial noise) tie" if points
                     else ""))
    shown = shown_objectives(front)
    columns = [("trial", "right"), ("architecture", "left"), *((s.header, "right") for s in shown), ("knee", "center"),
               *((("marginal", "center"),) if marked else ())]
    for col, justify in columns:
        # numbers must never be cut; on a narrow terminal the summary wraps between stages instead
        table.add_column(col, justify=justify, no_wrap=col != "architecture")
    for row in front.to_dict(orient="records"):
        table.add_row(str(row["trial"]), str(row["arch_summary"]), *(s.cell(row) for s in shown),
                      "◆" if row["knee"] else "", *(("yes" if row["marginal"] else "",) if marked else ()))
    if len(front):
        print_table(table, console)
    else:
        console.print(f"[yellow]{run.name}: no feasible complete trial yet, so the Pareto front is empty[/yellow]")
    console.print(totals_line(totals))


def totals_line(t: RunTotals) -> str:
    hv = "-" if t.hypervolume is None else f"{t.hypervolume:.4f}"
    extra = "".join(f", {n} {s}" for s, n in (("running", t.running), ("interrupted", t.interrupted)) if n)
    trained = t.complete + t.pruned + t.failed
    return (f"{t.trials} trials: {trained} trained ({t.complete} complete, {t.pruned} pruned, {t.failed} failed), "
            f"{t.infeasible} infeasible (screened out, untrained){extra}; front {t.front_size}; hypervolume {hv}; "
            f"wall time {format_seconds(t.wall_seconds)}"
            + ("" if t.driver_busy_share is None else f"; driver busy {t.driver_busy_share:.0%}"))


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else (f"{m}m{s:02d}s" if m else f"{s}s")


def _json_value(value):
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
