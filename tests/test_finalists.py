"""Finalists (cspnas.search.finalists): the pick, and `cspnas finalize` killed mid-way then finished, on a fixture
run (real study, real digits training of 2 finalists for 2 epochs; no Ray). The search's own --finalists is in
tests/test_search.py."""
import os
import signal
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from run_fixture import make_run
from safetensors.torch import load_file

from cspnas.errors import Interrupted
from cspnas.objectives import bind
from cspnas.pareto import knee_index, normalize
from cspnas.run_format import (brief_pareto_frame, final_results, load_run, open_storage,
                               pareto_frame, rows_frame)
from cspnas.search.finalists import finalize, pick_finalists
from cspnas.train.full import CHECKPOINT, METRICS, partial_dir


def test_pick_is_the_knee_then_spread_and_grows_by_one():
    objectives = bind(("accuracy", "macs"), {"accuracy": 0.0, "macs": 1e8})
    front = pd.DataFrame({"trial": [10, 11, 12, 13, 14], "accuracy": [0.5, 0.7, 0.8, 0.85, 0.9],
                          "macs": [1e4, 1e5, 1e6, 3e6, 1e7]})
    knee = knee_index(normalize(front[["accuracy", "macs"]].to_numpy(dtype=float), objectives))
    picks = [pick_finalists(front, objectives, k) for k in range(1, 7)]
    assert picks[0] == [int(front["trial"].iloc[knee])]
    assert all(p[:len(q)] == q for q, p in zip(picks, picks[1:]))  # greedy: K+1 adds one to the K
    assert sorted(picks[4]) == sorted(front["trial"]) and picks[5] == picks[4]  # K beyond the front: the front
    # the second pick is the member farthest from the knee
    pts = normalize(front[["accuracy", "macs"]].to_numpy(dtype=float), objectives)
    assert picks[1][1] == int(front["trial"].iloc[np.argmax(np.linalg.norm(pts - pts[knee], axis=1))])
    assert pick_finalists(front.iloc[0:0], objectives, 3) == []


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny digits nets: faster, and steadier on a loaded host
    yield
    torch.set_num_threads(before)


def _interrupt_at_second_finalist(run, how: str) -> None:
    """Stop `cspnas finalize RUN --finalists 2 --final-epochs 2` once its 2nd finalist finished an epoch: Ctrl-C
    in this process (cheap), or SIGKILL of a CLI process (the crash point `finalist_epoch`)."""
    if how == "kill":
        env = {**os.environ, "CSPNAS_KILL_AT": "finalist_epoch:3", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "cspnas.cli", "finalize", str(run), "--finalists", "2",
                               "--final-epochs", "2"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        return

    def log(line: str) -> None:
        if line.startswith("finalist 2/2") and "epoch 1/2" in line:
            os.kill(os.getpid(), signal.SIGINT)  # caught: training stops at its next step

    with pytest.raises(Interrupted, match=f"cspnas finalize {run}") as stopped:
        finalize(run, 2, 2, log=log)
    assert stopped.value.exit_code == 130


@pytest.mark.parametrize("how", ["sigint", pytest.param("kill", marks=pytest.mark.slow)])
def test_finalize_stopped_mid_way_finishes_without_redoing(tmp_path, one_thread, how):
    run = make_run(tmp_path, 12)
    _interrupt_at_second_finalist(run, how)
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    first = final_results(study)
    assert len(first) == 1  # the finished finalist is recorded, at once
    (done,) = first
    assert first[done]["final_epochs"] == 2 and 0 <= first[done]["final_val_acc"] <= 1
    leftover = [p for p in (run / "finalists").glob(".trial-*.partial") if (p / CHECKPOINT).is_file()]
    assert len(leftover) == 1  # the one in progress kept its finished epoch
    stamp = (run / "finalists" / f"trial-{done}" / METRICS).stat().st_mtime_ns
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["settings"]["finalists"] == 2 and config["settings"]["final_epochs"] == 2

    log: list[str] = []
    trained = finalize(run, log=log.append)  # K and N from the run: what the killed finalize was doing
    assert len(trained) == 1 and done not in trained
    (second,) = trained
    assert (run / "finalists" / f"trial-{done}" / METRICS).stat().st_mtime_ns == stamp  # not redone
    assert not partial_dir(run / "finalists" / f"trial-{second}").exists()
    results = final_results(optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db")))
    assert results[done] == first[done] and results[second]["final_epochs"] == 2
    assert finalize(run, log=log.append) == []  # nothing left: nothing redone
    assert any("all 2 trained already" in line for line in log)

    r = load_run(run)
    finalists = r.finalists
    assert sorted(finalists["trial"]) == sorted([done, second])
    assert finalists["final_test_acc"].between(0, 1).all()  # digits has a test split
    assert (finalists["final_epochs"] == 2).all() and finalists["final_train_seconds"].gt(0).all()
    # pareto.csv: the finalists' front on final accuracy, brief accuracy beside it; brief_pareto.csv: the brief one
    front, brief = r.front, pd.read_csv(run / "brief_pareto.csv")
    assert set(front["trial"]) <= {done, second} and front["knee"].sum() == 1
    by_trial = finalists.set_index("trial")
    assert (front["accuracy"].to_numpy() == by_trial.loc[front["trial"], "final_val_acc"].to_numpy()).all()
    assert (front["brief_accuracy"].to_numpy() == by_trial.loc[front["trial"], "accuracy"].to_numpy()).all()
    assert {done, second} <= set(brief["trial"])  # finalists come from the brief front
    assert sorted(brief["trial"]) == sorted(brief_pareto_frame(r.trials, config)[0]["trial"])
    assert sorted(front["trial"]) == sorted(pareto_frame(r.trials, config)[0]["trial"])
    assert brief_pareto_frame(rows_frame([]), config)[0].empty

    # export ships the final weights of the front's knee
    from cspnas.results.export import export_trial
    from cspnas.results.report import finalists_table, report_dict

    exported = export_trial(r, tmp_path / "exported", formats=("json", "safetensors"))
    knee = int(front.loc[front["knee"], "trial"].iloc[0])
    assert exported.trial == knee
    final_weights = load_file(str(run / by_trial.loc[knee, "final_weights"]))
    shipped = load_file(str(tmp_path / "exported" / "weights.safetensors"))
    assert all(torch.equal(final_weights[k], shipped[k]) for k in final_weights)
    card = (tmp_path / "exported" / "MODEL.md").read_text()
    assert "finalist training" in card and "test accuracy" in card
    # report: how each finalist moved
    table = finalists_table(r)
    assert sorted(table["final_rank"]) == [1, 2] or list(table["final_rank"]) == [1, 1]
    assert len(report_dict(r)["finalists"]) == 2
    from cspnas.results.dashboard import render_dashboard

    page = render_dashboard(r, importance=False)
    assert "<h2>Finalists</h2>" in page and "final validation accuracy (red: on the front" in page
