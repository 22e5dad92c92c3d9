"""SIGKILL the driver at five points of a search (its process group goes too, Ray workers included),
then --resume: exactly the budget, nothing lost or retrained, and trials.csv / pareto.csv / study.db
consistent with each other."""
import os
import signal
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from process_group import run_in_group
from test_tables import assert_same_tables, rebuilt

from cspnas.pareto import compute_front
from cspnas.run_format import load_run, objectives_of, open_storage
from cspnas.search.runner import run_search

FINAL = {"complete", "infeasible", "pruned", "failed"}
BUDGET = 4


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def snapshot(run: Path) -> dict[int, tuple]:
    """Finished trials as the study holds them: (state, accuracy, completion time)."""
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    out = {}
    for t in study.get_trials(deepcopy=False):
        status = t.user_attrs.get("status")
        if status in FINAL:
            out[t.number] = (status, t.user_attrs.get("accuracy"), t.datetime_complete)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_config", "trial_started:2", "trial_told:2", "between_tables:3",
                                   "finishing"])
def test_kill_then_resume(tmp_path, point):
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(BUDGET), "--epochs", "1",
           "--name", "run", "--results-dir", str(tmp_path), "--device", "cpu", "--sampler", "random",
           "--no-dashboard", "--concurrency", "2"]
    proc = run_in_group(cmd, timeout=300, what=f"the search to be killed at {point}",
                        env={**os.environ, "CSPNAS_KILL_AT": point})
    assert proc.returncode == -signal.SIGKILL, f"the driver was not killed at {point}: {proc.stderr[-1500:]}"
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "study.db").is_file()  # the run exists whole
    assert not (run / "dashboard.html").exists(), "--no-dashboard, yet the live dashboard was written"
    before = snapshot(run)

    run_search(resume=run, live=False)

    after = snapshot(run)
    assert len(after) == BUDGET
    for number, record in before.items():  # finished trials are neither lost nor retrained
        assert after[number] == record
    trials, front = pd.read_csv(run / "trials.csv"), pd.read_csv(run / "pareto.csv")
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    assert sorted(trials["trial"]) == sorted(t.number for t in study.trials)
    assert set(trials["state"]) <= FINAL | {"interrupted"}
    assert (trials["state"].isin(FINAL)).sum() == BUDGET
    config = yaml.safe_load((run / "config.yaml").read_text())
    done = trials[(trials["state"] == "complete") & (trials["fidelity"] >= 1)]
    expected = compute_front(done, objectives_of(config))
    assert sorted(front["trial"]) == sorted(expected.table["trial"])
    assert_same_tables(load_run(run), rebuilt(run, config, "front", tmp_path))  # the tables are the study's
    for n in trials.loc[trials["state"] == "interrupted", "trial"]:  # re-queued with the same architecture
        arch = trials.set_index("trial").loc[n, "arch_json"]
        if isinstance(arch, str) and arch:
            assert (trials.loc[trials["trial"] > n, "arch_json"] == arch).any()
