"""One trial's failure stays that trial's: a Ray worker that dies, or a trial out of host or GPU
memory, is recorded as failed with its reason, and the search goes on to its budget.

Faults are injected with CSPNAS_TEST_FAULT (cspnas/faults.py), read by the trainable in
the Ray worker at the end of a trial's first epoch (of two, so mid-training):
  exit@1     the worker process of trial 1 dies (os._exit) on every attempt
  exit@2x1   the worker of trial 2 dies on the first attempt only (Ray's retry recovers it)
  host-oom@3 trial 3 raises MemoryError
  gpu-oom@4  trial 4 raises torch.OutOfMemoryError on every attempt (there is no GPU here: injected,
             not real): retried once alone on its device, then recorded failed
  gpu-oom@5x1 trial 5 runs out of GPU memory once: the retry alone completes it
One search (the CLI, in a subprocess so its Ray workers inherit the variable) serves every test. It runs
with --worker-trials 1: every trial trains in a fresh trainer process of its Ray worker (cspnas.search.worker),
so a recycled trainer must lose or fail no trial, and a trainer that dies is handled as a dying worker.
"""
import os
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from process_group import run_in_group

from cspnas.run_format import open_storage

pytestmark = pytest.mark.slow  # one ~40 s search serves the module

FINAL = {"complete", "infeasible", "pruned", "failed"}
BUDGET = 6
FAULTS = "exit@1,exit@2x1,host-oom@3,gpu-oom@4,gpu-oom@5x1"


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(BUDGET), "--epochs", "2",
           "--name", "run", "--results-dir", str(root), "--device", "cpu", "--sampler", "random",
           "--concurrency", "2", "--keep-weights", "none", "--no-dashboard", "--worker-trials", "1"]
    proc = run_in_group(cmd, timeout=420, what="the search with injected faults",
                        env={**os.environ, "CSPNAS_TEST_FAULT": FAULTS})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "run"
    trials = pd.read_csv(run / "trials.csv").set_index("trial")
    return run, trials, out


def attempts(run: Path, trial: int) -> int:
    """How often the fault hook fired for `trial`, i.e. on how many attempts it was reached."""
    return len(list((run / ".faults").glob(f"{trial}.*")))


def test_search_reaches_budget_despite_faults(faulty_run):
    run, trials, _ = faulty_run
    assert len(trials) == BUDGET and set(trials["state"]) <= FINAL, trials[["state", "failure_reason"]]
    assert (trials.loc[[0, 5], "state"] == "complete").all()
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    states = {t.number: t.state for t in study.trials}
    assert sorted(states) == sorted(trials.index)
    expected = {"complete": optuna.trial.TrialState.COMPLETE, "failed": optuna.trial.TrialState.FAIL}
    assert all(states[n] == expected[s] for n, s in trials["state"].items())


def test_dead_worker_is_retried_then_recorded_failed(faulty_run):
    run, trials, _ = faulty_run
    row = trials.loc[1]
    assert row["state"] == "failed"
    assert "worker" in row["failure_reason"]
    assert attempts(run, 1) == 2  # FailureConfig(max_failures=1): Ray ran it once more, then gave up
    assert pd.isna(row["accuracy"])


def test_transient_worker_death_is_recovered_by_the_retry(faulty_run):
    run, trials, _ = faulty_run
    row = trials.loc[2]
    assert attempts(run, 2) == 1  # died once; the retry ran past the fault point
    assert row["state"] == "complete" and row["epochs_done"] == 2 and 0 <= row["accuracy"] <= 1
    assert pd.isna(row["failure_reason"]) or row["failure_reason"] == ""


@pytest.mark.parametrize("trial, memory", [(3, "out of host memory"), (4, "out of GPU memory")])
def test_out_of_memory_is_a_failed_trial_not_a_crash(faulty_run, trial, memory):
    run, trials, _ = faulty_run
    row = trials.loc[trial]
    assert row["state"] == "failed" and row["failure_reason"].startswith(memory)
    # a deterministic failure is a result: Ray does not retry it; out of GPU memory, the trainable
    # itself retries once alone on its device (cspnas.search.packing)
    assert attempts(run, trial) == (2 if trial == 4 else 1)
    assert row["epochs_done"] == 1 and pd.isna(row["accuracy"])


def test_out_of_gpu_memory_is_retried_alone_once(faulty_run):
    run, trials, _ = faulty_run
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    attrs = {t.number: t.user_attrs for t in study.trials}
    assert "also when trained alone" in trials.loc[4, "failure_reason"] and attrs[4]["retried_alone"]
    assert trials.loc[5, "state"] == "complete" and attrs[5]["retried_alone"] and attempts(run, 5) == 1
    assert trials.loc[5, "epochs_done"] == 2 and len(attrs[5]["val_acc_per_epoch"]) == 2  # the retry's own epochs
    assert not attrs[0]["retried_alone"] and attrs[0]["worker_rss_mb"] > 50 and attrs[0]["worker_pid"] > 0


def test_a_recycled_trainer_loses_no_trial(faulty_run):
    run, trials, _ = faulty_run
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    pids = [t.user_attrs["worker_pid"] for t in study.trials if "worker_pid" in t.user_attrs]
    assert len(pids) >= BUDGET - 1 and len(set(pids)) == len(pids)  # --worker-trials 1: a fresh trainer per trial
    # (trial 1's trainer dies before its first report, on both attempts: no pid recorded)
    assert os.getpid() not in pids and (trials["state"] == "complete").sum() == 3  # none lost to recycling


def test_summary_counts_failures(faulty_run):
    _, trials, out = faulty_run
    counts = trials["state"].value_counts().to_dict()
    assert counts == {"complete": 3, "failed": 3}
    assert "complete 3, failed 3" in out  # the CLI's closing summary line
