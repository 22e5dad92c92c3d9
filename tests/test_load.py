"""Load: eight trials at once on a small machine (here 2 cores, 0.25 CPU per trial) finish
without deadlock (the latency gate with eight trainers, SQLite writes) and without lost trials.

The search runs as the CLI in a subprocess with a wall-clock limit, so a deadlock fails the
test instead of hanging CI.
"""
import sys

import optuna
import pandas as pd
import pytest
from process_group import run_in_group

from cspnas.run_format import open_storage

FINAL = {"complete", "infeasible", "pruned", "failed"}
BUDGET, CONCURRENCY = 10, 8
LIMIT_S = 480  # about 2 min here; generous for a loaded CI machine


def max_overlap(trials: pd.DataFrame) -> int:
    """Most trials open at once (Optuna's start..completion of each trial)."""
    events = sorted([(t, 1) for t in pd.to_datetime(trials["started_at"])] +
                    [(t, -1) for t in pd.to_datetime(trials["completed_at"])])
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


@pytest.mark.slow
def test_concurrency_8_completes_without_deadlock_or_lost_trials(tmp_path):
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(BUDGET), "--epochs", "1",
           "--concurrency", str(CONCURRENCY), "--cpus-per-trial", "0.25", "--sampler", "random",
           "--name", "load", "--results-dir", str(tmp_path), "--device", "cpu", "--no-dashboard"]
    proc = run_in_group(cmd, timeout=LIMIT_S, what=f"--concurrency {CONCURRENCY} (deadlock?)")
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "load"
    trials = pd.read_csv(run / "trials.csv")
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    # the budget, every trial final, nothing failed for lack of resources
    assert len(trials) == BUDGET and set(trials["state"]) <= FINAL, trials[["trial", "state", "failure_reason"]]
    assert (trials["state"] == "complete").all(), trials[["trial", "state", "failure_reason"]]
    # trials.csv is the study
    by_number = {t.number: t for t in study.trials}
    assert sorted(by_number) == sorted(trials["trial"])
    for _, r in trials.iterrows():
        t = by_number[r["trial"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["status"] == r["state"]
        assert t.values[0] == pytest.approx(r["accuracy"]) and t.user_attrs["arch_hash"] == r["arch_hash"]
    # eight really ran at once
    assert max_overlap(trials) == CONCURRENCY
