"""Worker recycling (cspnas.search.worker) without Ray: trials run in a trainer process that is replaced
after --worker-trials trials, or at once when a trial is stopped mid-way; no trial is lost either way."""
from __future__ import annotations

import os

import pytest

from cspnas.search import worker
from cspnas.search.runner import _trial_spec
from cspnas.search.settings import SearchSettings, search_training
from cspnas.space.searchspace import load_space

pytestmark = pytest.mark.slow  # four trainer processes start (each imports torch): ~20 s quiet


def trial_config(tmp_path, trial: int, worker_trials: int) -> dict:
    settings = SearchSettings(name="w", train=search_training(epochs=1), train_subset=100, device="cpu",
                              worker_trials=worker_trials, keep_weights="none")
    arch = load_space("default").corners(1, 10, cheapest=True)[0]
    (tmp_path / ".locks").mkdir(exist_ok=True)
    return {"trial": trial, "arch": arch.to_json(), **_trial_spec(settings, tmp_path, "cpu"), "cores": None}


def run(config: dict) -> list[dict]:
    results: list[dict] = []
    worker.run_in_trainer(config, results.append)
    return results


def test_trainers_are_replaced_after_n_trials_and_when_a_trial_is_stopped(tmp_path):
    first, second = run(trial_config(tmp_path, 0, 1)), run(trial_config(tmp_path, 1, 1))
    for results in (first, second):
        assert [r["status"] for r in results] == ["complete"] and 0 <= results[0]["val_acc"] <= 1
    pids = {first[0]["worker_pid"], second[0]["worker_pid"]}
    assert len(pids) == 2 and os.getpid() not in pids  # --worker-trials 1: a fresh trainer per trial

    def stop(result: dict) -> None:  # Tune stops a trial by raising in its report
        raise SystemExit

    busy = worker._TRAINER
    with pytest.raises(SystemExit):
        worker.run_in_trainer(trial_config(tmp_path, 2, 5), stop)
    assert busy.proc.poll() is not None and worker._TRAINER is None  # killed with the stopped trial
    after = run(trial_config(tmp_path, 3, 5))
    assert after[0]["status"] == "complete" and after[0]["worker_pid"] not in pids | {busy.proc.pid}
    kept = worker._TRAINER
    assert kept.alive() and kept.trials == 1  # under its limit: kept for the worker's next trial
    kept.close()
