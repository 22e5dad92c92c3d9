"""Read a search's run directory (config.yaml, trials.csv, pareto.csv) into one checked `Run`.

The search replaces each file atomically, so a run can be read while it is still going:
we simply read whatever complete files are there. A missing pareto.csv means no trial has
reached the front yet (an empty front), not a broken run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cspnas.errors import CspnasError

STATES = ("complete", "infeasible", "pruned", "failed", "running", "interrupted")

# Columns every consumer relies on; the rest of the format is optional to the readers.
REQUIRED_TRIAL_COLUMNS = ("trial", "state", "arch_summary", "arch_json", "params", "macs", "latency_ms", "accuracy")
NUMERIC_TRIAL_COLUMNS = ("fidelity", "epochs_done", "epochs", "params", "macs", "latency_ms", "latency_iqr_ms",
                         "accuracy", "train_seconds", "cost_seconds", "hypervolume")
TEXT_TRIAL_COLUMNS = ("arch_hash", "arch_summary", "arch_json", "violations", "val_acc_per_epoch",
                      "failure_reason", "duplicate_of", "weights", "started_at", "completed_at")
FRONT_COLUMNS = ("trial", "arch_hash", "arch_summary", "accuracy", "macs", "params", "latency_ms", "latency_iqr_ms",
                 "knee", "weights")


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
    def knob_columns(self) -> list[str]:
        """The sampled design knobs (`p.` columns), in file order."""
        return [c for c in self.trials.columns if c.startswith("p.")]

    def trial(self, number: int) -> pd.Series | None:
        """The trials.csv row of trial `number`, or None when there is no such trial."""
        rows = self.trials[self.trials["trial"] == number]
        return None if rows.empty else rows.iloc[-1]

    def weights_path(self, row: pd.Series) -> Path | None:
        """Absolute path of a trial's kept weights, or None when they were not kept (or are gone)."""
        rel = row.get("weights")
        if not isinstance(rel, str) or not rel.strip():
            return None
        path = self.path / rel
        return path if path.is_file() else None


def load_run(path: str | Path) -> Run:
    """Load the run directory written by `cspnas search`; raises CspnasError saying what is wrong."""
    run = Path(path).expanduser()
    if not run.exists():
        raise CspnasError(f"{run}: no such run directory; pass the folder a search wrote, e.g. results/<name>")
    if not run.is_dir():
        hint = f"; pass its folder {run.parent}" if run.name in ("trials.csv", "pareto.csv", "config.yaml") else ""
        raise CspnasError(f"{run}: is a file, not a run directory{hint}")
    config = _read_config(run / "config.yaml")
    trials = _read_trials(run / "trials.csv")
    front = _read_front(run / "pareto.csv")
    return Run(path=run, config=config, trials=trials, front=front)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CspnasError(f"{path.parent}: not a run directory (no config.yaml); pass the folder a search wrote")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CspnasError(f"{path}: unreadable config ({first}); restore it from the search's settings") from None
    if not isinstance(data, dict):
        raise CspnasError(f"{path}: expected a mapping of search settings, got {type(data).__name__}")
    return data


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # keep_default_na=False + na_values=[""]: only empty cells are missing ("None" is a value)
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_TRIAL_COLUMNS})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CspnasError(f"{path}: unreadable CSV ({first}); the run directory is damaged") from None


def _read_trials(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CspnasError(f"{path.parent}: no trials.csv yet; the search has not finished a trial "
                          "(or this is not a run directory)")
    df = _read_csv(path)
    if df.empty:
        raise CspnasError(f"{path.parent}: the run has no trials yet; wait until the search finishes its first trial")
    missing = [c for c in REQUIRED_TRIAL_COLUMNS if c not in df.columns]
    if missing:
        raise CspnasError(f"{path}: missing column(s) {', '.join(missing)}; was it written by `cspnas search`?")
    df["trial"] = _int_column(path, df["trial"], "trial")
    df["state"] = df["state"].astype(str).str.strip().str.lower()
    unknown = sorted(set(df["state"]) - set(STATES))
    if unknown:
        raise CspnasError(f"{path}: unknown trial state(s) {', '.join(unknown)}; expected {', '.join(STATES)}")
    for col in NUMERIC_TRIAL_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    for col in TEXT_TRIAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), dtype=object)
    df["feasible"] = _bool_column(df["feasible"]) if "feasible" in df.columns else df["state"] != "infeasible"
    return df.reset_index(drop=True)


def _read_front(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FRONT_COLUMNS})
    df = _read_csv(path)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FRONT_COLUMNS})
    missing = [c for c in ("trial", "accuracy", "macs", "latency_ms") if c not in df.columns]
    if missing:
        raise CspnasError(f"{path}: missing column(s) {', '.join(missing)}; was it written by `cspnas search`?")
    df["trial"] = _int_column(path, df["trial"], "trial")
    for col in ("accuracy", "macs", "params", "latency_ms", "latency_iqr_ms"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    df["knee"] = _bool_column(df["knee"]) if "knee" in df.columns else False
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
