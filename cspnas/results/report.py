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
from cspnas.run_format import Run, pareto_frame
from cspnas.tables import print_table

FRONT_REPORT_COLUMNS = ("trial", "arch_summary", *COLUMNS, "latency_iqr_ms", "knee", "weights", "confirmed",
                        "marginal", "brief_accuracy", "final_test_acc", "final_epochs")
FINALIST_COLUMNS = ("trial", "arch_summary", "brief_accuracy", "final_val_acc", "final_test_acc", "brief_rank",
                    "final_rank", "on_front", "knee", "final_epochs", "final_train_seconds")
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
    prefiltered: int = 0  # --prefilter: feasible, not trained for a low zero-cost score

    def to_dict(self) -> dict:
        return asdict(self)


def run_totals(run: Run) -> RunTotals:
    states = run.trials["state"].value_counts()
    hv = run.trials["hypervolume"].dropna()
    # hypervolume never decreases with fixed refs; max() is right even if trials finish out of order
    if not run.finalists.empty:  # the front is the finalists' (on final accuracy): its own hypervolume
        hv = pd.Series([pareto_frame(run.trials, run.config)[1]])
    return RunTotals(
        trials=len(run.trials),
        **{s: int(states.get(s, 0)) for s in ("complete", "infeasible", "pruned", "failed", "running", "interrupted",
                                               "prefiltered")},
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


def finalists_table(run: Run) -> pd.DataFrame:
    """How each finalist moved: brief -> final validation accuracy, test accuracy, its rank among the
    finalists by accuracy before and after (1 = best), whether it is on the front (on final accuracy)."""
    f = run.finalists
    if f.empty:
        return pd.DataFrame(columns=list(FINALIST_COLUMNS))
    front = run.front.set_index("trial")
    table = pd.DataFrame({
        "trial": f["trial"], "arch_summary": f["arch_summary"], "brief_accuracy": f["accuracy"],
        "final_val_acc": f["final_val_acc"], "final_test_acc": f["final_test_acc"],
        "brief_rank": f["accuracy"].rank(ascending=False, method="min").astype(int),
        "final_rank": f["final_val_acc"].rank(ascending=False, method="min").astype(int),
        "on_front": f["trial"].isin(front.index), "knee": f["trial"].map(front["knee"]).eq(True),
        "final_epochs": f["final_epochs"], "final_train_seconds": f["final_train_seconds"]})
    return table.sort_values(["final_rank", "trial"]).reset_index(drop=True)


def finalists_note(run: Run) -> str | None:
    """One line saying what the front's accuracy is once there are finalists (None before)."""
    f = run.finalists
    if f.empty:
        return None
    epochs = int(f["final_epochs"].max())
    return (f"front on the final accuracy of {len(f)} finalist(s) ({epochs} epoch{'s' * (epochs != 1)}, retrained "
            f"from scratch); the brief front ({run.setting('epochs', '?')} epochs) is in brief_pareto.csv")


def shown_objectives(front: pd.DataFrame) -> list[Spec]:
    """The objectives a front table shows: every one measured (older runs lack some)."""
    return [s for s in OBJECTIVES.values() if s.column in front and front[s.column].notna().any()]


def report_dict(run: Run, sort: str = "accuracy") -> dict:
    """Everything the report shows, JSON-ready (NaN -> None)."""
    front = front_table(run, sort)
    records = [{k: _json_value(v) for k, v in row.items()} for row in front.to_dict(orient="records")]
    return {"run": run.name, "path": str(run.path), "dataset": run.setting("dataset"),
            "objectives": list(run.objectives), "totals": run_totals(run).to_dict(), "sort": sort, "front": records,
            "finalists": [{k: _json_value(v) for k, v in row.items()}
                          for row in finalists_table(run).to_dict(orient="records")]}


def front_csv(run: Run, sort: str = "accuracy") -> str:
    buffer = io.StringIO()
    front_table(run, sort).to_csv(buffer, index=False)
    return buffer.getvalue()


def print_report(run: Run, sort: str = "accuracy", console: Console | None = None) -> None:
    console = console or Console()
    totals = run_totals(run)
    front = front_table(run, sort)
    title = f"Pareto front of {run.name}" + (f" ({run.setting('dataset')})" if run.setting("dataset") else "")
    if not run.finalists.empty:
        title += ", on the finalists' final accuracy"
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
    finalists = finalists_table(run)
    if len(finalists):
        console.print(finalists_note(run))
        print_table(_finalists_rich(finalists), console)
    console.print(totals_line(totals))


def _finalists_rich(finalists: pd.DataFrame) -> Table:
    acc = OBJECTIVES["accuracy"]
    table = Table(title="Finalists: brief -> final accuracy", caption="rank among the finalists by validation "
                  "accuracy (1 = best); test: the data set's test split (- where it has none)")
    for col in ("trial", "architecture", "brief", "final", "test", "rank", "front"):
        table.add_column(col, justify="left" if col == "architecture" else "right", no_wrap=col != "architecture")
    for r in finalists.to_dict(orient="records"):
        table.add_row(str(r["trial"]), str(r["arch_summary"]), acc.format(r["brief_accuracy"]),
                      acc.format(r["final_val_acc"]),
                      "-" if pd.isna(r["final_test_acc"]) else acc.format(r["final_test_acc"]),
                      f"{r['brief_rank']} -> {r['final_rank']}",
                      ("◆" if r["knee"] else "yes") if r["on_front"] else "")
    return table


def totals_line(t: RunTotals) -> str:
    hv = "-" if t.hypervolume is None else f"{t.hypervolume:.4f}"
    extra = "".join(f", {n} {s}" for s, n in (("running", t.running), ("interrupted", t.interrupted)) if n)
    trained = t.complete + t.pruned + t.failed
    return (f"{t.trials} trials: {trained} trained ({t.complete} complete, {t.pruned} pruned, {t.failed} failed), "
            f"{t.infeasible} infeasible (screened out, untrained)"
            + (f", {t.prefiltered} prefiltered (low zero-cost score, untrained)" if t.prefiltered else "")
            + f"{extra}; front {t.front_size}; hypervolume {hv}; "
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
