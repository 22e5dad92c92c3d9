"""Resume you can trust, with real processes, real Ray and real signals: one search per run,
Ctrl-C and SIGTERM stop cleanly with the resume hint, a SIGKILLed driver's Ray processes are ended
by the next search, and no architecture repeats across resumes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
import yaml
from process_group import kill_group

from cspnas.search.runner import run_search
from cspnas.search.settings import SearchSettings, search_training
from cspnas.run_format import open_storage

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "cspnas.cli", "search", "--device", "cpu", "--sampler", "random", "--concurrency", "2"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(CLI + args, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(what: str, check, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.3)
    kill_group(proc)
    pytest.fail(f"no {what} within {timeout} s")


def training(run: Path) -> bool:
    """A trial has finished an epoch: workers are up and training."""
    try:
        return any(t.state.name == "RUNNING" and t.user_attrs.get("epochs_done", 0) >= 1 for t in study(run).trials)
    except Exception:  # the run directory or its study does not exist yet
        return False


def alive(pid: int, started: float) -> bool:
    """Still the recorded process, and not a zombie waiting to be reaped."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - started) < 0.05 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def holder(run: Path) -> dict:
    try:
        text = (run / ".lock").read_text()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


# -- interruption --------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, to_group, times", [(signal.SIGINT, True, 1), (signal.SIGTERM, False, 1),
                                                   (signal.SIGINT, True, 2)], ids=["ctrl-c", "sigterm", "ctrl-c-twice"])
def test_a_signal_stops_the_search_with_the_resume_hint(tmp_path, sig, to_group, times):
    run = tmp_path / "run"
    proc = start(["--name", "run", "--results-dir", str(tmp_path), "--budget", "4", "--epochs", "40"])
    try:
        wait_for("trial training", lambda: training(run), proc)
        t0 = time.monotonic()
        for _ in range(times):  # a second Ctrl-C forces the stop
            os.killpg(proc.pid, sig) if to_group else os.kill(proc.pid, sig)  # a terminal's Ctrl-C reaches the group
            time.sleep(0.3)
        _, err = proc.communicate(timeout=120)
        stopped_s = time.monotonic() - t0
    finally:
        kill_group(proc)
    assert proc.returncode == 128 + sig
    name = signal.Signals(sig).name
    assert err.strip().splitlines()[-1] == \
        f"cspnas: search stopped by {name}; continue it with `cspnas search --resume {run}`"
    assert "Traceback" not in err and "Tuner.restore" not in err and "*** " not in err, err[-2000:]
    assert stopped_s < 30, f"took {stopped_s:.0f} s to stop"
    assert (run / ".lock").read_text() == ""  # released
    if times == 2:  # forced: the trials are left as a killed search leaves them, for the resume to re-queue
        assert {t.user_attrs.get("status") for t in study(run).trials} <= {"running", "interrupted"}
        return
    trials = pd.read_csv(run / "trials.csv")
    assert "running" not in set(trials["state"]) and "interrupted" in set(trials["state"])
    assert not [t for t in study(run).trials if t.state.name == "RUNNING"]
    assert 'http-equiv="refresh"' not in (run / "dashboard.html").read_text()  # an interrupted run's page stays put


# -- one search per run, Ray leftovers -----------------------------------------------------------

def test_a_second_resume_is_refused_and_a_killed_drivers_ray_processes_are_ended(tmp_path):
    run = tmp_path / "run"
    first = start(["--name", "run", "--results-dir", str(tmp_path), "--budget", "4", "--epochs", "40",
                   "--no-dashboard"])
    try:
        wait_for("trial training", lambda: training(run), first)
        second = subprocess.run(CLI + ["--no-dashboard", "--resume", str(run), "--budget", "6"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"cspnas: error: {run} is in use by a search on {socket.gethostname()} (pid {first.pid}, started ")
        assert lines[0].endswith("wait for it to end or stop it (Ctrl-C) before resuming")
        recorded = [tuple(p) for p in holder(run)["ray"]]
        assert recorded, "the search recorded no Ray processes"
        os.kill(first.pid, signal.SIGKILL)  # the driver only, as an OOM killer would
        first.wait(timeout=30)
        time.sleep(2)
        assert [pid for pid, started in recorded if alive(pid, started)], \
            "nothing survived the driver: this test would not show the cleanup"

        third = start(["--no-dashboard", "--resume", str(run)])
        try:
            wait_for("the leftovers to be ended",
                     lambda: not [pid for pid, started in recorded if alive(pid, started)], third, timeout=60)
            wait_for("the resume's own Ray session", lambda: holder(run).get("ray"), third)  # past ray.init
            os.kill(third.pid, signal.SIGTERM)
            _, err = third.communicate(timeout=120)
            assert third.returncode == 143, err[-2000:]
            assert "ended" in err and "Ray process(es) left by the killed search" in err
        finally:
            kill_group(third)
    finally:
        kill_group(first)
    states = [t.user_attrs.get("status") for t in study(run).trials]
    assert "running" not in states and not [t for t in study(run).trials if t.state.name == "RUNNING"]


# -- resume continues the search ------------------------------------------------------------------

def test_no_architecture_repeats_across_three_resumes(tmp_path):
    settings = SearchSettings(name="run", results_dir=str(tmp_path), budget=3, train=search_training(epochs=1),
                              sampler="random", device="cpu", concurrency=2, keep_weights="none")
    run_search(settings, live=False, dashboard=False)
    run = tmp_path / "run"
    for budget in (5, 7, 9):
        run_search(resume=run, budget=budget, live=False, dashboard=False)
    s = study(run)
    final = [t for t in s.trials if t.user_attrs.get("status") in ("complete", "infeasible", "pruned", "failed")]
    assert len(final) == 9  # the budget means the same after any number of resumes
    hashes = [t.user_attrs["arch_hash"] for t in s.trials if t.user_attrs.get("status") != "resampled"]
    assert len(hashes) == len(set(hashes)), "an architecture was trained or reused twice"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert [r["changed"]["budget"] for r in config["resumes"]] == [[3, 5], [5, 7], [7, 9]]
    assert config["settings"]["budget"] == 9


# -- a full disk ---------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only): room for the run, not for the weights of every trial."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_stops_the_search_in_one_line_and_resume_requeues_the_trial(small_disk):
    run = small_disk / "run"
    proc = start(["--name", "run", "--results-dir", str(small_disk), "--budget", "6", "--epochs", "1",
                  "--keep-weights", "all", "--no-dashboard"])
    _, err = proc.communicate(timeout=300)
    kill_group(proc)
    assert proc.returncode == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    # where the disk filled decides the inner text: the OS ("No space left on device"), SQLite ("database or disk
    # is full") or cspnas's own writer
    assert line.startswith("cspnas: error: disk full while searching (") and \
        any(w in line for w in ("No space left on device", "database or disk is full", "disk full writing")), line
    assert line.endswith(f"free space, then continue with `cspnas search --resume {run}` (the trial it hit is re-queued)")
    assert "Traceback" not in err, err[-3000:]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    out = run_search(resume=run, live=False, dashboard=False)
    s = study(run)
    final = [t for t in s.trials if t.user_attrs.get("status") in ("complete", "infeasible", "pruned", "failed")]
    assert len(final) == 6 and not [t for t in final if t.user_attrs["status"] == "failed"]
    interrupted = [t for t in s.trials if t.user_attrs.get("status") == "interrupted"]
    assert interrupted, "the trial the full disk hit should be recorded as interrupted"
    for t in interrupted:  # re-queued and trained, not failed and not counted
        assert [u for u in s.trials if u.user_attrs.get("requeued_from") == t.number
                and u.user_attrs.get("status") == "complete"]
    assert len(out.trials) == len(s.trials)
