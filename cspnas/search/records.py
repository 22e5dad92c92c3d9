"""The run's tables, derived from the Optuna study (the single source of truth).

Every trial's facts live in its Optuna user attributes; trials.csv and pareto.csv are
rewritten from the study after each change, atomically (temp file + rename), so a crash
can never leave them disagreeing with study.db beyond the trial being written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from cspnas.search.faults import crash_point
from cspnas.results.pareto import Objective, compute_front, default_objectives, hypervolume_curve

TRIAL_COLUMNS = [
    "trial", "state", "fidelity", "epochs_done", "epochs", "arch_hash", "arch_summary", "arch_json",
    "params", "macs", "latency_ms", "latency_iqr_ms", "latency_runs", "feasible", "violations",
    "val_acc_per_epoch", "accuracy", "train_seconds", "cost_seconds", "started_at", "completed_at",
    "failure_reason", "duplicate_of", "weights", "hypervolume", "node",
]
PARETO_COLUMNS = ["trial", "arch_hash", "arch_summary", "accuracy", "macs", "params", "latency_ms",
                  "latency_iqr_ms", "knee", "weights"]


def objectives_for(config: dict[str, Any]) -> list[Objective]:
    return default_objectives(macs_ref=float(config["macs_ref"]), latency_ref_ms=float(config["latency_ref_ms"]))


def trial_row(t: optuna.trial.FrozenTrial, run_dir: Path) -> dict[str, Any]:
    a = t.user_attrs
    state = a.get("status", "running")
    if t.state == optuna.trial.TrialState.RUNNING:
        state = "running"
    epochs = a.get("epochs", 0)
    done = a.get("epochs_done", 0)
    row = {
        "trial": t.number, "state": state, "fidelity": (done / epochs) if epochs else 0.0,
        "epochs_done": done, "epochs": epochs,
        "arch_hash": a.get("arch_hash", ""), "arch_summary": a.get("arch_summary", ""), "arch_json": a.get("arch", ""),
        "params": a.get("params"), "macs": a.get("macs"), "latency_ms": a.get("latency_ms"),
        "latency_iqr_ms": a.get("latency_iqr_ms"), "latency_runs": a.get("latency_runs"),
        "feasible": a.get("feasible"), "violations": "; ".join(a.get("violations", [])),
        "val_acc_per_epoch": json.dumps(a.get("val_acc_per_epoch", [])),
        "accuracy": a.get("accuracy") if state == "complete" else None,
        "train_seconds": a.get("train_seconds"), "cost_seconds": a.get("cost_seconds"),
        "started_at": t.datetime_start.isoformat() if t.datetime_start else None,
        "completed_at": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "failure_reason": a.get("failure_reason", ""), "duplicate_of": a.get("duplicate_of"),
        "node": a.get("node", ""),
        # weights of trials that left the front are deleted; the table says what is on disk
        "weights": a.get("weights", "") if a.get("weights") and (run_dir / a["weights"]).is_file() else "",
    }
    row.update({f"p.{k}": v for k, v in t.params.items()})
    return row


def trials_frame(study: optuna.Study, config: dict[str, Any], run_dir: Path) -> pd.DataFrame:
    rows = [trial_row(t, run_dir) for t in study.get_trials(deepcopy=False)]
    df = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    for col in TRIAL_COLUMNS:
        if col not in df:
            df[col] = None
    df["hypervolume"] = np.nan
    done = front_candidates(df)
    if len(done):
        # hypervolume of the front after each full-fidelity trial, in completion order
        ordered = done.sort_values("completed_at")
        curve = hypervolume_curve(ordered, objectives_for(config), order_column="completed_at")
        df.loc[ordered.index, "hypervolume"] = curve
    knob_cols = sorted(c for c in df.columns if c.startswith("p."))
    return df[TRIAL_COLUMNS + knob_cols]


def front_candidates(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible, full-fidelity, completed trials: the only ones allowed on the front."""
    if df.empty:
        return df
    mask = (df["state"] == "complete") & (df["feasible"] == True) & (df["fidelity"] >= 1.0)  # noqa: E712
    return df[mask].astype({"accuracy": float, "macs": float, "latency_ms": float})


def pareto_frame(trials: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, float]:
    cand = front_candidates(trials)
    if cand.empty:
        return pd.DataFrame(columns=PARETO_COLUMNS), 0.0
    front = compute_front(cand, objectives_for(config))
    return front.table[PARETO_COLUMNS].reset_index(drop=True), front.hypervolume


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_tables(study: optuna.Study, run_dir: Path, config: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    trials = trials_frame(study, config, run_dir)
    front, hv = pareto_frame(trials, config)
    write_csv_atomic(trials, run_dir / "trials.csv")
    crash_point("between_tables")
    write_csv_atomic(front, run_dir / "pareto.csv")
    return trials, front, hv
