"""Is RUN/study.db a readable cspnas study? Checked on open by search --resume, report, export
and dashboard, so a truncated or overwritten file is one line instead of a traceback (or, for the
readers of the CSV tables, damage nobody notices).

Checking never writes: the study is opened `immutable` (no -wal/-shm file appears or changes;
what a killed search left in its -wal is not read, the main file is what is checked), except
while a search holds the run, when it is opened read-only and shares the live -wal/-shm files.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cspnas.errors import CspnasError
from cspnas.search.runlock import search_is_running

# Optuna's RDB schema: a database without these tables (or without a study) is not a search's study.db
OPTUNA_TABLES = frozenset({"studies", "trials", "trial_values", "trial_user_attributes"})
FIX = "restore it from a backup, or start a new search with another --name"


def _connect(path: Path, *, with_wal: bool = False) -> sqlite3.Connection:
    """`with_wal`: also read a -wal file a killed search left (this updates its -shm index)."""
    wal = path.with_name(path.name + "-wal").exists()
    mode = "mode=ro" if wal and (with_wal or search_is_running(path.parent)) else "immutable=1"
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as e:
        raise CspnasError(f"{path}: cannot open the study database ({e}); {FIX}") from None


def check_study_db(path: Path) -> None:
    """Raise CspnasError in one line unless `path` passes SQLite's quick_check and holds an Optuna study."""
    path = Path(path)
    conn = _connect(path)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise CspnasError(f"{path}: damaged study database ({problems[0]}); {FIX}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not OPTUNA_TABLES <= tables or not conn.execute("SELECT 1 FROM studies").fetchone():
            raise CspnasError(f"{path}: not a cspnas study (no Optuna study in it); {FIX}")
    except sqlite3.Error as e:
        raise CspnasError(f"{path}: damaged study database ({e}); {FIX}") from None
    finally:
        conn.close()


def trial_counts(path: Path, final_states: tuple[str, ...]) -> tuple[int, int]:
    """(trials whose recorded status is one of `final_states`, all trials) of a checked study.db,
    read without opening it for writing: a resume that is refused must leave the run as it was."""
    conn = _connect(Path(path), with_wal=True)
    try:
        marks = ",".join("?" * len(final_states))
        final = conn.execute(f"SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'status' "
                             f"AND value_json IN ({marks})", [json.dumps(s) for s in final_states]).fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    finally:
        conn.close()
    return final, total
