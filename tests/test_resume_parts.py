"""The parts of a trustworthy resume, each with real processes and files: the run lock, the flag
check, the study.db integrity check, the Ray-leftover cleanup and the stop request."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from cspnas.errors import CspnasError, Interrupted
from cspnas.study_db import check_study_db, trial_counts
from cspnas.run_format import open_storage
from cspnas.search.interrupt import StopRequest, is_disk_full, resume_hint
from cspnas.search.leftovers import end_leftovers, is_ray_process, local_ray_processes
from cspnas.search.resume import record_resume, resume_settings
from cspnas.runlock import Holder, RunLock, process_start_time, search_is_running
from cspnas.search.settings import Constraints, SearchSettings, search_training

HOLD = """
import sys, time
from pathlib import Path
from cspnas.runlock import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holding_process(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- the run lock ------------------------------------------------------------------------------

def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(tmp_path):
    proc = _holding_process(tmp_path)
    try:
        with pytest.raises(CspnasError, match=rf"in use by a search on {socket.gethostname()} \(pid {proc.pid}, "):
            RunLock(tmp_path).acquire()
        assert search_is_running(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert not search_is_running(tmp_path)  # its pid is gone
    with RunLock(tmp_path) as lock:
        assert lock.previous is not None and lock.previous.pid == proc.pid
        assert search_is_running(tmp_path)
        with pytest.raises(CspnasError, match=f"pid {os.getpid()}"):  # one search per run, in-process too
            RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == ""  # released: a free run
    with RunLock(tmp_path) as lock:
        assert lock.previous is None


def test_the_lock_names_what_holds_the_run(tmp_path):
    """finalize holds the run like a search; a refusal says which of the two holds it (old lock files: a search)."""
    with RunLock(tmp_path, "finalize"):
        with pytest.raises(CspnasError, match=rf"in use by `cspnas finalize` on {socket.gethostname()} \(pid "):
            RunLock(tmp_path).acquire()
    _record(tmp_path)  # written by a cspnas before the lock named its command
    with pytest.raises(CspnasError, match="in use by a search on"):
        RunLock(tmp_path).acquire()


def _record(run: Path, **holder) -> None:
    (run / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "started": process_start_time(os.getpid()), "ray": [], **holder}))


def test_a_reused_pid_is_not_the_holder(tmp_path):
    _record(tmp_path, started=1.0)  # our pid, but a process that started in 1970: the holder is dead
    with RunLock(tmp_path) as lock:
        assert lock.previous.started == 1.0


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    _record(tmp_path, host="elsewhere.example")
    before = (tmp_path / ".lock").read_text()
    with pytest.raises(CspnasError, match=r"locked by a search on elsewhere\.example .*cannot be checked from .*"
                                          r"delete .*\.lock and resume again"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == before
    assert search_is_running(tmp_path)


# -- Ray leftovers -----------------------------------------------------------------------------

def test_leftovers_are_ended_by_pid_and_start_time_only(tmp_path):
    # a stand-in for a Ray agent and an unrelated process (whose command line merely mentions ray)
    stand_in = tmp_path / "ray" / "agent.py"  # run from a ray/ folder, as Ray's own daemons are
    stand_in.parent.mkdir()
    stand_in.write_text("import time; time.sleep(120)")
    agent = subprocess.Popen([sys.executable, str(stand_in)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "--sampler", "array"])
    try:
        time.sleep(0.3)  # let both exec python
        found = dict(local_ray_processes())
        assert agent.pid in found and other.pid not in found
        dead = Holder(host=socket.gethostname(), pid=1 << 30, started=0.0,
                      ray=((agent.pid, found[agent.pid]), (other.pid, found[agent.pid] - 1000.0)))
        assert end_leftovers(dead) == 1  # the second entry's start time is not `other`'s: untouched
        assert agent.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        for p in (agent, other):
            p.kill()
            p.wait()


def test_ray_processes_are_told_by_their_command_line():
    assert is_ray_process(["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--x"])
    assert is_ray_process(["ray::DashboardAgent", "", ""]) and is_ray_process(["ray::IDLE"])
    assert is_ray_process(["/venv/bin/python", "/venv/lib/python3.11/site-packages/ray/_private/log_monitor.py"])
    assert not is_ray_process(["python", "-m", "cspnas.cli", "search", "--results-dir", "/tmp/ray/x"])
    assert not is_ray_process([])


def test_the_lock_records_ray_processes_for_the_next_search(tmp_path):
    with RunLock(tmp_path) as lock:
        lock.record_ray(((123, 4.5),))
        assert json.loads((tmp_path / ".lock").read_text())["ray"] == [[123, 4.5]]


# -- flags on resume ---------------------------------------------------------------------------

RECORDED = SearchSettings(name="run", budget=10, train=search_training(epochs=3), sampler="random",
                          concurrency=2,  # a run records the concurrency it used (derived when not given)
                          constraints=Constraints(max_macs=5_000_000)).to_dict()


def test_flags_that_define_the_search_are_refused_by_name():
    given = {"train.epochs": 5, "sampler": "tpe", "constraints.max_latency_ms": 8.0, "budget": 12}
    with pytest.raises(CspnasError) as e:
        resume_settings("results/run", RECORDED, given, used=4)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("--epochs 5 (the run has 3)", "--sampler tpe (the run has random)",
                 "--target-latency 8.0 (the run has unset)", "cannot change on resume", "another --name"):
        assert part in msg
    assert "--budget" not in msg


def test_budget_concurrency_and_address_may_change_and_are_recorded():
    given = {"budget": 12, "concurrency": 4, "address": "10.0.0.5:6379", "train.epochs": 3,
             "name": "other"}
    settings, changed = resume_settings("results/run", RECORDED, given, used=4)
    assert SearchSettings.from_dict(settings) == SearchSettings.from_dict(
        {**RECORDED, "budget": 12, "concurrency": 4, "address": "10.0.0.5:6379"})
    assert changed == {"budget": [10, 12], "concurrency": [2, 4], "address": [None, "10.0.0.5:6379"]}
    config = {"settings": settings}
    record_resume(config, changed, used=4)
    record_resume(config, {}, used=12)
    assert [r["trials_done"] for r in config["resumes"]] == [4, 12]
    assert config["resumes"][0]["changed"]["budget"] == [10, 12] and "changed" not in config["resumes"][1]


def test_a_budget_below_what_was_used_is_refused():
    with pytest.raises(CspnasError, match=r"--budget 3: results/run has already used 4 .* --budget 4 or more"):
        resume_settings("results/run", RECORDED, {"budget": 3}, used=4)
    settings, _ = resume_settings("results/run", RECORDED, {"budget": 4}, used=4)
    assert settings["budget"] == 4


# -- study.db integrity ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "study.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(path)
    study = optuna.create_study(storage=storage, study_name="cspnas", directions=["maximize", "minimize"])
    for i in range(30):
        study.enqueue_trial({"x": i})
    storage.engine.dispose()
    return path


def _listing(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in folder.iterdir()}


def test_a_good_study_passes_and_nothing_is_written(study_db):
    before = _listing(study_db.parent)
    check_study_db(study_db)
    assert _listing(study_db.parent) == before


def test_a_study_a_killed_search_left_is_checked_with_its_wal_and_left_as_it_was(tmp_path, study_db):
    live = tmp_path / "live"
    live.mkdir()
    (live / "study.db").write_bytes(study_db.read_bytes())
    writer = sqlite3.connect(live / "study.db")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # what it writes now stays in the -wal file
    writer.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (1, 'status', '\"complete\"')")
    writer.commit()
    killed = tmp_path / "killed"  # the files as a SIGKILL leaves them
    killed.mkdir()
    for name in ("study.db", "study.db-wal"):
        (killed / name).write_bytes((live / name).read_bytes())
    writer.close()
    before = {p.name: (p.stat().st_mtime, p.read_bytes()) for p in killed.iterdir()}
    check_study_db(killed / "study.db")
    assert trial_counts(killed / "study.db", ("complete",)) == (1, 30)  # the -wal's trial is counted
    assert {p.name: (p.stat().st_mtime, p.read_bytes()) for p in killed.iterdir()} == before


def _other_database(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]), "damaged study database"),
    (lambda p: p.write_bytes(b"not a database, just text " * 200), "damaged study database"),
    (lambda p: p.write_bytes(b""), "not a cspnas study"),
    (_other_database, "not a cspnas study"),
], ids=["truncated", "garbage", "empty", "another-database"])
def test_a_damaged_study_is_one_line(tmp_path, study_db, damage, message):
    path = tmp_path / "study.db"
    path.write_bytes(study_db.read_bytes())
    damage(path)
    with pytest.raises(CspnasError) as e:
        check_study_db(path)
    assert message in str(e.value) and "\n" not in str(e.value) and "restore it from a backup" in str(e.value)


# -- the stop request --------------------------------------------------------------------------

def test_first_signal_asks_second_ctrl_c_forces_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.signum == signal.SIGTERM  # asked, not killed
        os.kill(os.getpid(), signal.SIGINT)  # outside forcible(): the records are being written, wait
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt), stop.forcible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGTERM) == before
    hint = resume_hint(Path("results/run"), signal.SIGINT)
    assert isinstance(hint, Interrupted) and hint.exit_code == 130
    assert "cspnas search --resume results/run" in str(hint)
    assert resume_hint(Path("r"), signal.SIGTERM).exit_code == 143


# -- a full disk -------------------------------------------------------------------------------

def test_a_full_disk_is_recognised_however_it_arrives(tmp_path):
    with pytest.raises(OSError) as full:
        with open("/dev/full", "wb") as f:  # a real ENOSPC
            f.write(b"x" * 65536)
            f.flush()
    assert is_disk_full(full.value)
    # SQLite out of pages reads "database or disk is full", wrapped by Optuna in a StorageInternalError
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(tmp_path / "study.db")
    study = optuna.create_study(storage=storage, study_name="cspnas")
    pages = sqlite3.connect(tmp_path / "study.db").execute("PRAGMA page_count").fetchone()[0]
    sqlalchemy.event.listen(storage.engine, "connect",
                            lambda conn, _: conn.execute(f"PRAGMA max_page_count = {pages}"))
    storage.engine.dispose()
    trial = study.ask()
    with pytest.raises(Exception) as db_full:
        for i in range(1000):
            trial.set_user_attr(f"k{i}", "x" * 2000)
    assert is_disk_full(db_full.value), repr(db_full.value)
    assert not is_disk_full(ValueError("exceeding max length")) and not is_disk_full(OSError(13, "denied"))
    # a worker's failure reason
    assert is_disk_full("OSError: [Errno 28] No space left on device: 'weights/trial-3.safetensors'")
    assert not is_disk_full("diverged: loss is nan")
