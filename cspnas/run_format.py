"""The run directory: the one module that writes and reads it.

    RUN/config.yaml     settings, space, data, latency setup, objectives' references
    RUN/study.db        the Optuna study (SQLite): the single source of truth
    RUN/trials.csv      one row per trial, derived from the study (a search appends while it runs)
    RUN/pareto.csv      the feasible, full-fidelity Pareto front of trials.csv (of the finalists on their
                        final accuracy once there are finalists; the brief front is then brief_pareto.csv)
    RUN/finalists/      trial-N/ of each finalist's longer training (cspnas.search.finalists)
    RUN/weights/        trial-N.safetensors of the trials whose weights are kept

Every file is replaced atomically (temp file + rename), except that a running search appends a
trial's row to trials.csv whenever the trial changes (`LiveTables`): readers keep each trial's
last row and drop a torn last line, so a run can be read while its search is still going, and a
crash never leaves tables that disagree with study.db beyond the trial being written (the next
start rewrites both from it). Runs written before objectives were recorded load with the default three.
Optuna is imported inside the functions that need it: reading a run must stay light.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import numbers
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from cspnas import __version__
from cspnas.errors import CspnasError
from cspnas.cost.zero_cost import COLUMNS as SCORE_COLUMNS
from cspnas.fsutil import check_writable_dir, write_atomic, writing
from cspnas.objectives import (COLUMNS, CONFIRMED_COLUMNS, OBJECTIVES, bind, marginal, optuna_directions, run_limits,
                               run_noise, run_objectives, run_references, run_validation_images, settled)
from cspnas.pareto import Objective, compute_front, hypervolume_curve, pareto_mask
from cspnas.faults import crash_point
from cspnas.space.searchspace import load_yaml
from cspnas.study_db import check_study_db

CONFIG, STUDY, TRIALS, PARETO, WEIGHTS = "config.yaml", "study.db", "trials.csv", "pareto.csv", "weights"
BRIEF_PARETO, FINALISTS = "brief_pareto.csv", "finalists"
LATENCY_MODEL = "latency_model.json"  # a copy of --latency-model's file: a resume predicts with the same model
STUDY_NAME = "cspnas"
STATES = ("complete", "infeasible", "pruned", "failed", "running", "interrupted", "resampled", "prefiltered")
# states a screened candidate ends in (prefiltered: feasible, but its zero-cost score ranked too low to train)
FINAL_STATES = ("complete", "infeasible", "pruned", "failed", "prefiltered")
TRAINED_STATES = ("complete", "pruned", "failed")  # handed to training: what --budget counts

_MEASURED = [c for c in COLUMNS if c != "accuracy"]
# a finalist's longer training (cspnas.search.finalists), beside the brief `accuracy`
FINAL_COLUMNS = ["final_val_acc", "final_test_acc", "final_epochs", "final_train_seconds", "final_weights"]
TRIAL_COLUMNS = [
    "trial", "state", "fidelity", "epochs_done", "epochs", "arch_hash", "arch_summary", "arch_json",
    *_MEASURED, "latency_iqr_ms", "latency_runs", "latency_backend",
    "latency_predicted_ms", "latency_measured_ms", "latency_source",  # --latency-model: which value was used
    "feasible", "violations", *SCORE_COLUMNS,  # zero-cost scores (cspnas.cost.zero_cost)
    "val_acc_per_epoch", "accuracy", *FINAL_COLUMNS, "val_acc_int8", "train_seconds", "cost_seconds",
    "cost_wait_seconds", "started_at",
    "completed_at",
    "failure_reason", "duplicate_of", "weights", "hypervolume", "node",
    *CONFIRMED_COLUMNS, "measured_on",
]
# latency_ms / latency_iqr_ms: the confirmed re-measurement where there is one (`confirmed`); `marginal`: a
# margin to a limit inside the noise (cspnas.objectives.settled, .marginal)
# Once there are finalists, pareto.csv is their front on final accuracy: `accuracy` (the objective the front,
# knee and hypervolume are computed on) is then the final validation accuracy, `brief_accuracy` the brief one,
# the ranks are among all finalists by accuracy (1 = best), and `weights` are the final weights.
PARETO_COLUMNS = ["trial", "arch_hash", "arch_summary", *COLUMNS, "latency_iqr_ms", "knee", "weights",
                  "confirmed", "marginal", "brief_accuracy", "final_val_acc", "final_test_acc", "final_epochs",
                  "brief_rank", "final_rank"]
_FRONT_FINAL = ("brief_accuracy", "final_val_acc", "final_test_acc", "final_epochs", "brief_rank", "final_rank")
_NUMERIC = ("fidelity", "epochs_done", "epochs", *COLUMNS, "latency_iqr_ms", "latency_predicted_ms",
            "latency_measured_ms", "val_acc_int8", *FINAL_COLUMNS[:-1], "train_seconds", "cost_seconds",
            "cost_wait_seconds", "hypervolume", *CONFIRMED_COLUMNS, *SCORE_COLUMNS)
_TEXT = ("arch_hash", "arch_summary", "arch_json", "latency_backend", "latency_source", "violations", "val_acc_per_epoch",
         "failure_reason", "duplicate_of", "weights", "final_weights", "started_at", "completed_at")


def weights_path(trial: int) -> str:
    """Where a trial's weights go, relative to RUN (as trials.csv records it)."""
    return f"{WEIGHTS}/trial-{trial}.safetensors"


def full_fidelity(epochs_done, epochs):
    """Trained for every epoch of the search: the only trials allowed on the front.
    Works on numbers and on pandas columns alike."""
    return (epochs_done >= epochs) & (epochs > 0)


# -- writing -----------------------------------------------------------------------------------------

def write_yaml_atomic(path: Path, data: dict) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    write_atomic(path, df.to_csv(index=False))


def _cell(value: Any) -> str:
    """A CSV cell from a raw value, the same whatever else is in its column (unlike pandas, which
    writes 3 as 3.0 in a column with gaps): an appended row and a full rewrite read back alike."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return buf.getvalue()


def new_run_dir(results_dir: str | Path, name: str) -> Path:
    """RUN = results_dir/name; refuse to touch an existing one."""
    check_writable_dir(results_dir, f"--results-dir {results_dir}")
    run_dir = Path(results_dir) / name
    if run_dir.exists():
        raise CspnasError(f"{run_dir} already exists; continue it with `cspnas search --resume {run_dir}` "
                          "or choose another --name")
    return run_dir


def new_config(*, settings: dict[str, Any], space_yaml: str, space_name: str, data: dict[str, Any],
               num_classes: int, in_chs: int, input_size: int, train_device: str, latency: dict[str, Any],
               references: dict[str, float]) -> dict[str, Any]:
    """config.yaml of a new run. The objectives and limits are in `settings`; `references` are the
    objectives' fixed hypervolume references (cspnas.objectives.references)."""
    return {
        "cspnas_version": __version__, "created_at": dt.datetime.now().isoformat(timespec="seconds"),
        "settings": settings, "space_yaml": space_yaml, "space_name": space_name, "data": data,
        "num_classes": num_classes, "in_chs": in_chs, "input_size": input_size, "train_device": train_device,
        "latency": latency, "references": {k: float(v) for k, v in references.items()},
    }


def open_storage(path: Path):
    """The study's SQLite storage in WAL mode: every Optuna write is a commit, and with the
    default rollback journal each one costs an fsync (~15 ms here); WAL + synchronous=NORMAL
    stays consistent across a killed process and makes writes ~10x cheaper."""
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})

    def on_connect(conn, _record) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect so the pragmas apply to every connection
    return storage


def open_study(storage, objectives: Sequence[str], sampler=None, *, create: bool = False):
    """The run's study (new when `create`), with the objectives' directions and metric names, so
    optuna-dashboard labels its axes (runs made before metric names were set get them now)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, sampler=sampler, load_if_exists=not create,
                                directions=optuna_directions(objectives))
    names = [OBJECTIVES[n].column for n in objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study


def create_run_dir(run_dir: Path, config: dict[str, Any], files: dict[str, str] | None = None) -> None:
    """RUN appears whole or not at all: config.yaml, an empty study and `files` (name -> text) are made
    in a hidden staging folder that is renamed into place, so a crash never leaves a half-made run."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = run_dir.with_name(f".{run_dir.name}.creating-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write_yaml_atomic(staging / CONFIG, config)
        for name, text in (files or {}).items():
            write_atomic(staging / name, text)
        storage = open_storage(staging / STUDY)
        open_study(storage, run_objectives(config), create=True)
        storage.engine.dispose()
        os.rename(staging, run_dir)  # fails if RUN appeared meanwhile: never overwrite
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def objectives_of(config: dict[str, Any]) -> list[Objective]:
    """The run's objectives bound to its references, for the Pareto maths."""
    return bind(run_objectives(config), run_references(config), run_noise(config), run_validation_images(config))


def _json_text(value: Any) -> str:
    """A record (e.g. the latency backend's description) as JSON text, so trials.csv stays machine-readable."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def trial_row(t, run_dir: Path) -> dict[str, Any]:
    """One trials.csv row from an Optuna FrozenTrial (its user attributes hold every fact)."""
    a = t.user_attrs
    state = "running" if t.state.name == "RUNNING" else a.get("status", "running")
    epochs, done = a.get("epochs", 0), a.get("epochs_done", 0)
    row = {
        "trial": t.number, "state": state, "fidelity": (done / epochs) if epochs else 0.0,
        "epochs_done": done, "epochs": epochs,
        "arch_hash": a.get("arch_hash", ""), "arch_summary": a.get("arch_summary", ""), "arch_json": a.get("arch", ""),
        **{c: a.get(c) for c in _MEASURED}, "latency_iqr_ms": a.get("latency_iqr_ms"),
        "latency_runs": a.get("latency_runs"), "latency_backend": _json_text(a.get("latency_backend", "")),
        **{k: a.get(k) for k in ("latency_predicted_ms", "latency_measured_ms", "latency_source")},
        "feasible": a.get("feasible"), "violations": "; ".join(a.get("violations", [])),
        **{c: a.get(c) for c in SCORE_COLUMNS},
        "val_acc_per_epoch": json.dumps(a.get("val_acc_per_epoch", [])),
        "accuracy": a.get("accuracy") if state == "complete" else None,
        "val_acc_int8": a.get("val_acc_int8") if state == "complete" else None,
        "train_seconds": a.get("train_seconds"), "cost_seconds": a.get("cost_seconds"),
        "cost_wait_seconds": a.get("cost_wait_seconds"),
        "started_at": t.datetime_start.isoformat() if t.datetime_start else None,
        "completed_at": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "failure_reason": a.get("failure_reason", ""), "duplicate_of": a.get("duplicate_of"),
        "node": a.get("node", ""), **{c: a.get(c) for c in CONFIRMED_COLUMNS}, "measured_on": a.get("measured_on", ""),
        # weights of trials that left the front are deleted; the table says what is on disk
        "weights": a.get("weights", "") if a.get("weights") and (run_dir / a["weights"]).is_file() else "",
    }
    row.update({f"p.{k}": v for k, v in t.params.items()})
    return row


def trial_rows(study, config: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """trials.csv rows of a study (in trial order), with the hypervolume after each full-fidelity trial."""
    rows = [trial_row(t, run_dir) for t in study.get_trials(deepcopy=False)]
    confirmed, final = confirmed_latencies(study), final_results(study)
    for row in rows:
        row.update(confirmed.get(row["trial"], {}))
        row.update(final_row(final.get(row["trial"]), run_dir))
        row["hypervolume"] = None
    done = front_candidates(rows_frame(rows))
    if len(done):
        ordered = done.sort_values("completed_at")  # in completion order
        curve = hypervolume_curve(ordered, objectives_of(config), order_column="completed_at")
        for i, hv in zip(ordered.index, curve):
            rows[i]["hypervolume"] = float(hv)
    return rows


def trial_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """trials.csv's columns: the fixed ones, then every sampled knob (`p.*`) in name order."""
    return TRIAL_COLUMNS + sorted({k for row in rows for k in row if k.startswith("p.")})


def rows_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """trials.csv rows as a DataFrame with every column."""
    return pd.DataFrame(list(rows), columns=trial_columns(rows))


def trials_frame(study, config: dict[str, Any], run_dir: Path) -> pd.DataFrame:
    """trials.csv of a study, with the hypervolume after each full-fidelity trial."""
    return rows_frame(trial_rows(study, config, run_dir))


# The end-of-search confirmation pass re-times front members of finished trials, which Optuna keeps
# read-only: their confirmed latencies live in one study attribute, {trial number: fields}.
CONFIRMED_ATTR = "latency_confirmed"


def confirmed_latencies(study) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in (study.user_attrs.get(CONFIRMED_ATTR) or {}).items()}


def record_confirmed(study, found: dict[int, dict[str, Any]]) -> None:
    """Add confirmation-pass results ({trial: latency_confirmed_* fields}) to the study."""
    merged = {str(k): v for k, v in confirmed_latencies(study).items()}
    merged.update({str(k): v for k, v in found.items()})
    study.set_user_attr(CONFIRMED_ATTR, merged)


# A finalist's result (cspnas.search.finalists) is recorded as soon as its training ends. Its trial is finished,
# and Optuna keeps finished trials read-only, so the results live in one study attribute, {trial: fields}.
FINAL_ATTR = "finalists"


def final_results(study) -> dict[int, dict[str, Any]]:
    """The finalists' results by trial number: final_val_acc, final_test_acc, final_epochs,
    final_train_seconds, final_weights (relative to RUN)."""
    return {int(k): v for k, v in (study.user_attrs.get(FINAL_ATTR) or {}).items()}


def record_final(study, trial: int, result: dict[str, Any]) -> None:
    """Add one finalist's result to the study (read, merge, write: only the run's lock holder writes)."""
    merged = {str(k): v for k, v in final_results(study).items()}
    merged[str(trial)] = result
    study.set_user_attr(FINAL_ATTR, merged)


def final_row(result: dict[str, Any] | None, run_dir: Path) -> dict[str, Any]:
    """trials.csv's final_* cells of a trial (empty for a trial that is no finalist)."""
    result = result or {}
    row = {c: result.get(c) for c in FINAL_COLUMNS}
    if row["final_weights"] and not (run_dir / row["final_weights"]).is_file():
        row["final_weights"] = None  # the table says what is on disk
    return row


def front_candidates(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible, full-fidelity, completed trials: the only ones allowed on the front."""
    if df.empty:
        return df
    epochs_done, epochs = (pd.to_numeric(df[c], errors="coerce") for c in ("epochs_done", "epochs"))
    mask = (df["state"] == "complete") & (df["feasible"] == True) & full_fidelity(epochs_done, epochs)  # noqa: E712
    return df[mask].astype({c: float for c in COLUMNS})


def finalist_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The front candidates that have a final accuracy (the finalists)."""
    cand = front_candidates(df)
    if cand.empty or "final_val_acc" not in cand.columns:
        return cand.iloc[0:0]
    return cand[pd.to_numeric(cand["final_val_acc"], errors="coerce").notna()]


def brief_pareto_frame(trials: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, float]:
    """The front of every front candidate on its brief accuracy, and its hypervolume (the search's own front)."""
    cand = front_candidates(trials)
    if cand.empty:
        return pd.DataFrame(columns=PARETO_COLUMNS), 0.0
    return _front_table(cand, config)


def pareto_frame(trials: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, float]:
    """pareto.csv of a trials table and the front's hypervolume: the brief front, or, once there are
    finalists, the front of the finalists on their final accuracy (a brief accuracy and a final one are
    different fidelities: trials without a final one cannot be compared with those that have one)."""
    final = finalist_rows(trials)
    if final.empty:
        return brief_pareto_frame(trials, config)
    acc = final["final_val_acc"].astype(float)
    final = final.assign(brief_accuracy=final["accuracy"], final_val_acc=acc, accuracy=acc,
                         weights=final["final_weights"],
                         brief_rank=final["accuracy"].rank(ascending=False, method="min").astype(int),
                         final_rank=acc.rank(ascending=False, method="min").astype(int))
    return _front_table(final, config)


def _front_table(cand: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, float]:
    front = compute_front(settled(cand), objectives_of(config))
    table = front.table.assign(marginal=marginal(front.table, run_limits(config)))
    return table.reindex(columns=PARETO_COLUMNS).reset_index(drop=True), front.hypervolume


def exact_front(trials: pd.DataFrame, config: dict[str, Any]) -> pd.DataFrame:
    """The candidates no other dominates with every difference counted (settled values, trial order):
    the rows the noise-aware front is chosen from (cspnas.pareto, "Measurement noise")."""
    cand = settled(front_candidates(trials))
    if cand.empty:
        return cand
    return cand.iloc[np.flatnonzero(pareto_mask(cand, [o.exact() for o in objectives_of(config)]))]


_PRUNABLE = ("complete", "pruned", "failed")  # finished trials whose weights go unless kept


class LiveTables:
    """trials.csv and pareto.csv of a search in progress, at a cost per trial that does not grow
    with the study.

    `rebuild` derives both from study.db (start, resume, finish) and rewrites them atomically.
    `update` records one trial's new state from the FrozenTrial at hand: its row is appended to
    trials.csv (one write, no fsync: study.db is the truth and the next rebuild rewrites what a
    crash lost; readers keep a trial's last row and drop a torn last line), the front is the front
    of the current front plus the new point (dominance is transitive, so that equals the front of
    all trials; the noise-aware front is a function of the exact one, which is kept for that), and
    pareto.csv, which is small, is rewritten only when the front changes. Weights
    of trials off the exact front are deleted as they leave it (`keep`: --keep-weights), and the rows
    of those trials are appended again, so the table still says what is on disk. The exact front, not
    the shown one: a member tied off the noise-aware front can come back onto it when a later trial
    changes the ties, and must still have its weights. A new knob column
    (a conditional knob sampled for the first time) rewrites trials.csv from memory.

    `front` is always the brief front (what the search extends trial by trial); once the run has
    finalists, pareto.csv holds their front on final accuracy (`shown`, fixed while trials are added:
    finalists change only when they are trained) and brief_pareto.csv the brief front.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], keep: str):
        self.run_dir, self.config, self.keep = run_dir, config, keep
        self.rows: dict[int, dict[str, Any]] = {}  # trial -> its current row
        self.columns: list[str] = list(TRIAL_COLUMNS)
        self.hypervolume = 0.0
        objectives = objectives_of(config)
        self._columns = [o.column for o in objectives]
        self._signs = np.array([-1.0 if o.direction == "max" else 1.0 for o in objectives])
        self._set_front(pd.DataFrame(columns=PARETO_COLUMNS), pd.DataFrame(columns=["trial", *self._columns]))
        self.shown: pd.DataFrame | None = None  # the finalists' front once there are finalists
        self.shown_hypervolume = 0.0

    def _set_front(self, front: pd.DataFrame, exact: pd.DataFrame) -> None:
        """The front (pareto.csv), the exact front it is chosen from, and what the per-trial check needs
        of the exact one as plain arrays (pandas is slow per call)."""
        self.front = front
        self.front_trials: list[int] = [int(t) for t in front["trial"]]
        self.exact_trials: list[int] = [int(t) for t in exact["trial"]]
        self._front_points = exact[self._columns].to_numpy(dtype=float).reshape(-1, len(self._columns)) * self._signs

    def frame(self) -> pd.DataFrame:
        """The trials table, one row per trial in trial order (O(study): for the end of a search)."""
        return rows_frame([self.rows[k] for k in sorted(self.rows)])

    def rebuild(self, study) -> None:
        rows = trial_rows(study, self.config, self.run_dir)
        frame = rows_frame(rows)
        front, self.hypervolume = brief_pareto_frame(frame, self.config)
        self._set_front(front, exact_front(frame, self.config))
        self.shown = None
        if not finalist_rows(frame).empty:
            self.shown, self.shown_hypervolume = pareto_frame(frame, self.config)
        kept = set(self.exact_trials)
        for row in rows:
            self._prune(row, kept)
        self.rows = {row["trial"]: row for row in rows}
        self._write_trials()
        crash_point("between_tables")
        self._write_front()

    def update(self, trial) -> dict[str, Any]:
        """Record a trial's new state (an Optuna FrozenTrial); returns its row."""
        row = trial_row(trial, self.run_dir)
        number = row["trial"]
        old = self.rows.get(number)
        row["hypervolume"] = old.get("hypervolume") if old else None
        self.rows[number] = row
        changed, front_moved = [row], False
        if self._candidate(row) and not self._dominated(row):
            members = sorted([self.rows[t] for t in self.exact_trials if t != number] + [row],
                             key=lambda r: r["trial"])  # ties go to the lower trial, as in a rebuild
            before, before_exact = self.front_trials, self.exact_trials
            frame = rows_frame(members)
            front, hv = brief_pareto_frame(frame, self.config)
            self._set_front(front, exact_front(frame, self.config))
            row["hypervolume"] = self.hypervolume = hv  # the hypervolume after this trial
            front_moved = self.front_trials != before
            kept = set(self.exact_trials)
            changed += [self.rows[t] for t in sorted(set(before_exact) - kept) if self._prune(self.rows[t], kept)]
        elif self._candidate(row):
            row["hypervolume"] = self.hypervolume  # dominated: the front and its hypervolume stay
        self._prune(row, set(self.exact_trials))
        if set(row) - set(self.columns):  # a knob never seen before: a new header
            self._write_trials()
        else:
            with writing(self.run_dir / TRIALS), open(self.run_dir / TRIALS, "a", encoding="utf-8") as f:
                f.write(csv_text(changed, self.columns, header=False))
        if front_moved:
            crash_point("between_tables")
            self._write_front()
        return row

    @staticmethod
    def _candidate(row: dict[str, Any]) -> bool:
        """front_candidates for one row, without pandas (this runs for every trial)."""
        return (row["state"] == "complete" and row["feasible"] is True
                and bool(full_fidelity(row["epochs_done"] or 0, row["epochs"] or 0)))

    def _dominated(self, row: dict[str, Any]) -> bool:
        """Whether the front stays as it is with this row added: a member of the exact front dominates
        it, or equals it and has the lower trial number. Most trials of a long search end here."""
        point = np.array([np.nan if row.get(c) is None else float(row[c]) for c in self._columns]) * self._signs
        if np.isnan(point).any():
            return True  # never on the front
        members = self._front_points
        no_worse, equal = np.all(members <= point, axis=1), np.all(members == point, axis=1)
        earlier = np.array(self.exact_trials, dtype=int) < row["trial"]
        return bool((no_worse & ~equal).any() or (equal & earlier).any())

    def _prune(self, row: dict[str, Any], front: set[int]) -> bool:
        """Delete a finished trial's weights unless kept (--keep-weights); True when deleted."""
        if (self.keep == "all" or not row.get("weights") or row["state"] not in _PRUNABLE
                or (self.keep == "front" and row["trial"] in front)):
            return False
        (self.run_dir / row["weights"]).unlink(missing_ok=True)
        row["weights"] = ""
        return True

    def _write_trials(self) -> None:
        rows = [self.rows[k] for k in sorted(self.rows)]
        self.columns = trial_columns(rows)
        write_atomic(self.run_dir / TRIALS, csv_text(rows, self.columns))

    def _write_front(self) -> None:
        if self.shown is None:
            write_csv_atomic(self.front, self.run_dir / PARETO)
            (self.run_dir / BRIEF_PARETO).unlink(missing_ok=True)  # no finalists (any more): one front
        else:
            write_csv_atomic(self.front, self.run_dir / BRIEF_PARETO)
            write_csv_atomic(self.shown, self.run_dir / PARETO)


# -- reading ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value
class Run:
    """One search run as read from disk; `trials` and `front` are indexed by position, not trial."""

    path: Path
    config: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame

    def setting(self, key: str, default: Any = None) -> Any:
        """A search setting from config.yaml: top level first, then its `settings` section, then the
        trials' training recipe (`settings.train`; flat in runs of cspnas <= 0.1.0)."""
        if self.config.get(key) is not None:
            return self.config[key]
        section = self.config.get("settings")
        section = section if isinstance(section, dict) else {}
        train = section.get("train") if isinstance(section.get("train"), dict) else {}
        value = section.get(key, train.get(key))
        return default if value is None else value

    @property
    def name(self) -> str:
        return str(self.setting("name") or self.path.name)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The run's objective names (cspnas.objectives)."""
        return run_objectives(self.config)

    @property
    def limits(self) -> dict[str, float | None]:
        """Hard limits by objective name (None: no limit)."""
        return run_limits(self.config)

    def bound_objectives(self) -> list[Objective]:
        return objectives_of(self.config)

    @property
    def knob_columns(self) -> list[str]:
        """The sampled design knobs (`p.` columns), in file order."""
        return [c for c in self.trials.columns if c.startswith("p.")]

    def trial(self, number: int) -> pd.Series | None:
        """The trials.csv row of trial `number`, or None when there is no such trial."""
        rows = self.trials[self.trials["trial"] == number]
        return None if rows.empty else rows.iloc[-1]

    def weights_path(self, row: pd.Series) -> Path | None:
        """Absolute path of a trial's kept weights, or None when they were not kept (or are gone): a
        finalist's final weights where it has them, else its brief training's."""
        for key in ("final_weights", "weights"):
            rel = row.get(key)
            if isinstance(rel, str) and rel.strip() and (self.path / rel).is_file():
                return self.path / rel
        return None

    @property
    def finalists(self) -> pd.DataFrame:
        """trials.csv rows of the finalists (trials with a final accuracy), best final accuracy first."""
        t = self.trials
        if "final_val_acc" not in t.columns:
            return t.iloc[0:0]
        return t[t["final_val_acc"].notna()].sort_values(["final_val_acc", "trial"], ascending=[False, True])


def load_run(path: str | Path) -> Run:
    """Load the run directory written by `cspnas search`; raises CspnasError saying what is wrong."""
    run = Path(path).expanduser()
    if not run.exists():
        raise CspnasError(f"{run}: no such run directory; pass the folder a search wrote, e.g. results/<name>")
    if not run.is_dir():
        hint = f"; pass its folder {run.parent}" if run.name in (TRIALS, PARETO, CONFIG) else ""
        raise CspnasError(f"{run}: is a file, not a run directory{hint}")
    config = _read_config(run / CONFIG)
    if (run / STUDY).exists():  # the tables are derived from it: a damaged study is damage to the run
        check_study_db(run / STUDY)
    try:
        objectives = run_objectives(config)
    except CspnasError as e:
        raise CspnasError(f"{run / CONFIG}: {e}") from None
    columns = [OBJECTIVES[n].column for n in objectives]
    trials = _read_trials(run / TRIALS, columns)
    front = _read_front(run / PARETO, columns)
    return Run(path=run, config=config, trials=trials, front=front)


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml of a run to resume (it must hold the search settings)."""
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise CspnasError(f"{run_dir}: no such run directory; --resume takes the folder a search wrote, "
                          "e.g. results/<name>")
    if not path.is_file():
        raise CspnasError(f"{run_dir}: not a cspnas run (config.yaml is missing); --resume takes the folder a "
                          "search wrote, e.g. results/<name>")
    try:
        config = _load_config_yaml(path)
    except (OSError, UnicodeDecodeError, CspnasError) as e:
        raise CspnasError(f"{path}: corrupt YAML ({_reason(e, path)}); restore it or start a new run with "
                          "another --name") from None
    if not isinstance(config, dict) or "settings" not in config:
        raise CspnasError(f"{path}: not a cspnas run config (no 'settings'); start a new run with another --name")
    return config


def _load_config_yaml(path: Path) -> Any:
    """config.yaml through the space loader's bounded YAML reader: a hand-edited config may hold an alias bomb."""
    return load_yaml(path.read_text(encoding="utf-8"), str(path))


def _reason(e: Exception, path: Path) -> str:
    """The first line of a read error, without the path the caller's message already names."""
    text = str(e).strip().removeprefix(f"{path}: ")
    return text.splitlines()[0] if text else type(e).__name__


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CspnasError(f"{path.parent}: not a run directory (no config.yaml); pass the folder a search wrote")
    try:
        data = _load_config_yaml(path)
    except (OSError, UnicodeDecodeError, CspnasError) as e:
        raise CspnasError(f"{path}: unreadable config ({_reason(e, path)}); restore it from the search's settings") \
            from None
    if not isinstance(data, dict):
        raise CspnasError(f"{path}: expected a mapping of search settings, got {type(data).__name__}")
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a row being appended (or cut by a crash): not there yet
            text = text[:text.rfind("\n") + 1]
        # keep_default_na=False + na_values=[""]: only empty cells are missing ("None" is a value)
        return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""], dtype={c: str for c in _TEXT})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CspnasError(f"{path}: unreadable CSV ({first}); the run directory is damaged") from None


def _read_trials(path: Path, objective_columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise CspnasError(f"{path.parent}: no trials.csv yet; the search has not finished a trial "
                          "(or this is not a run directory)")
    df = _read_csv(path)
    if df.empty:
        raise CspnasError(f"{path.parent}: the run has no trials yet; wait until the search finishes its first trial")
    required = ["trial", "state", "arch_summary", "arch_json", "params", *objective_columns]
    missing = [c for c in dict.fromkeys(required) if c not in df.columns]
    if missing:
        raise CspnasError(f"{path}: missing column(s) {', '.join(missing)}; was it written by `cspnas search`?")
    df["trial"] = _int_column(path, df["trial"], "trial")
    # a running search appends a trial's row again when it changes: its last row is current
    df = df.drop_duplicates("trial", keep="last").sort_values("trial", kind="stable")
    df["state"] = df["state"].astype(str).str.strip().str.lower()
    unknown = sorted(set(df["state"]) - set(STATES))
    if unknown:
        raise CspnasError(f"{path}: unknown trial state(s) {', '.join(unknown)}; expected {', '.join(STATES)}")
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    for col in _TEXT:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object)
    df["feasible"] = _bool_column(df["feasible"]) if "feasible" in df.columns else df["state"] != "infeasible"
    return df.reset_index(drop=True)


def _read_front(path: Path, objective_columns: list[str]) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in PARETO_COLUMNS})
    if not path.is_file():
        return empty  # no trial has reached the front yet: an empty front, not a broken run
    df = _read_csv(path)
    if df.empty:
        return empty
    missing = [c for c in ["trial", *objective_columns] if c not in df.columns]
    if missing:
        raise CspnasError(f"{path}: missing column(s) {', '.join(missing)}; was it written by `cspnas search`?")
    df["trial"] = _int_column(path, df["trial"], "trial")
    for col in (*COLUMNS, "latency_iqr_ms"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    for col in _FRONT_FINAL:  # absent in runs written before finalists
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    for col in ("knee", "confirmed", "marginal"):
        df[col] = _bool_column(df[col]) if col in df.columns else False
    for col in ("arch_hash", "arch_summary", "weights"):
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object)
    return df.reset_index(drop=True)


def _int_column(path: Path, col: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(col, errors="coerce")
    if values.isna().any() or (values % 1 != 0).any():
        raise CspnasError(f"{path}: column {name!r} must hold whole numbers; the run directory is damaged")
    return values.astype(int)


def _bool_column(col: pd.Series) -> pd.Series:
    # pandas reads True/False itself, but an empty cell turns the column into text
    truthy = {"true", "1", "yes", "1.0"}
    return col.map(lambda v: v if isinstance(v, bool) else str(v).strip().lower() in truthy).astype(bool)


def parse_json_list(text: Any) -> list:
    """A JSON list cell (e.g. val_acc_per_epoch); [] when empty or malformed."""
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
