"""Is RUN/study.db a readable cspnas study? Checked on open by search --resume, report, export
and dashboard, so a truncated or overwritten file is one line instead of a traceback (or, for the
readers of the CSV tables, damage nobody notices).

Checking never writes to the run. A study closed cleanly (no -wal file) is opened `immutable`.
One a killed search left with a -wal file is checked on a private copy of both files: its main
file alone may be mid-checkpoint, and opening it in place would rewrite the -shm index. While a
search holds the run, the study is opened read-only and shares the live -wal/-shm files.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterator

from cspnas.errors import CspnasError
from cspnas.runlock import search_is_running

# Optuna's RDB schema: a database without these tables (or without a study) is not a search's study.db
OPTUNA_TABLES = frozenset({"studies", "trials", "trial_values", "trial_user_attributes"})
FIX = "restore it from a backup, or start a new search with another --name"


@contextlib.contextmanager
def read_only_uri(path: Path) -> Iterator[str]:
    """A SQLite URI that reads `path` as the module docstring says, without writing to the run
    (sqlite3: `connect(uri, uri=True)`; SQLAlchemy: `sqlite:///{uri}&uri=true`)."""
    wal = path.with_name(path.name + "-wal")
    with tempfile.TemporaryDirectory(prefix="cspnas-study-") as tmp:
        if not wal.exists():
            yield f"{path.resolve().as_uri()}?immutable=1"
        elif search_is_running(path.parent):
            yield f"{path.resolve().as_uri()}?mode=ro"
        else:
            for f in (path, wal):
                shutil.copyfile(f, Path(tmp) / f.name)
            yield f"{(Path(tmp) / path.name).as_uri()}?mode=rw"


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    with read_only_uri(path) as uri:
        try:
            conn = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as e:
            raise CspnasError(f"{path}: cannot open the study database ({e}); {FIX}") from None
        try:
            yield conn
        except sqlite3.Error as e:
            raise CspnasError(f"{path}: damaged study database ({e}); {FIX}") from None
        finally:
            conn.close()


def check_study_db(path: Path) -> None:
    """Raise CspnasError in one line unless `path` passes SQLite's quick_check and holds an Optuna study."""
    path = Path(path)
    with _reading(path) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise CspnasError(f"{path}: damaged study database ({problems[0]}); {FIX}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not OPTUNA_TABLES <= tables or not conn.execute("SELECT 1 FROM studies").fetchone():
            raise CspnasError(f"{path}: not a cspnas study (no Optuna study in it); {FIX}")


def trial_counts(path: Path, final_states: tuple[str, ...]) -> tuple[int, int]:
    """(trials whose recorded status is one of `final_states`, all trials) of a checked study.db,
    read without opening it for writing: a resume that is refused must leave the run as it was."""
    with _reading(Path(path)) as conn:
        marks = ",".join("?" * len(final_states))
        final = conn.execute(f"SELECT COUNT(*) FROM trial_user_attributes WHERE key = 'status' "
                             f"AND value_json IN ({marks})", [json.dumps(s) for s in final_states]).fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    return final, total


def study_attr(path: Path, key: str):
    """A study user attribute of a checked study.db (None when unset), read without opening it for writing."""
    with _reading(Path(path)) as conn:
        row = conn.execute("SELECT value_json FROM study_user_attributes WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])
