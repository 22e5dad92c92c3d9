"""The live tables (run_format.LiveTables): a row appended per trial change, the front updated from
itself and the new point, never disagreeing with a from-scratch rebuild from study.db.

A real Optuna SQLite study is driven the way the search loop drives it (trials started, told out
of order, front members evicted with their weights, exact ties, a knob column first seen late,
every final state), and after every few changes the tables as `load_run` reads them must equal
those a fresh rebuild writes from a copy of the run."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest

from cspnas import run_format
from cspnas.objectives import DEFAULT_OBJECTIVES, told_values

REFERENCES = {"macs": 1e9, "latency": 100.0}
N_TRIALS = 40


def new_run(tmp_path: Path, name: str, keep: str, accuracy_noise: float = 0.0) -> tuple[Path, dict, optuna.Study]:
    config = run_format.new_config(settings={"objectives": list(DEFAULT_OBJECTIVES), "keep_weights": keep,
                                             "accuracy_noise": accuracy_noise},
                                   space_yaml="", space_name="test", data={"val": 1000}, num_classes=10, in_chs=3,
                                   input_size=8, train_device="cpu", latency={}, references=REFERENCES)
    run = tmp_path / name
    run_format.create_run_dir(run, config)
    (run / run_format.WEIGHTS).mkdir()
    study = run_format.open_study(run_format.open_storage(run / run_format.STUDY), DEFAULT_OBJECTIVES,
                                  optuna.samplers.RandomSampler(seed=0))
    return run, config, study


def rebuilt(run: Path, config: dict, keep: str, tmp_path: Path) -> run_format.Run:
    """The run's tables rebuilt from scratch, from a copy of its study (the original is untouched)."""
    copy = tmp_path / "rebuild"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    storage = run_format.open_storage(copy / run_format.STUDY)
    objectives = run_format.run_objectives(config)  # the run's own, not the default three
    run_format.LiveTables(copy, config, keep).rebuild(run_format.open_study(storage, objectives))
    storage.engine.dispose()
    return run_format.load_run(copy)


def assert_same_tables(live: run_format.Run, fresh: run_format.Run) -> None:
    pd.testing.assert_frame_equal(live.trials.reset_index(drop=True), fresh.trials.reset_index(drop=True),
                                  check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(live.front, fresh.front, check_dtype=False, check_exact=True)


def start(study: optuna.Study, rng: random.Random, late_knob: bool) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_categorical("act", ["relu", "silu"])
    if late_knob:  # a conditional knob nobody sampled before: trials.csv gets a new column
        trial.suggest_int("groups", 1, 8)
    # coarse grids make exact ties between trials (only the lower trial number is on the front)
    attrs = {"arch": f'{{"n": {trial.number}}}', "arch_hash": f"h{trial.number}", "arch_summary": "Cd1x16@0.5",
             "params": rng.choice([1000, 2000, 4000]), "macs": rng.choice([1e5, 2e5, 4e5, 8e5]),
             "latency_ms": rng.choice([0.5, 1.0, 2.0]), "latency_iqr_ms": 0.01, "latency_runs": 10,
             "latency_backend": "torch", "memory_bytes": 1024, "cost_seconds": 0.2, "cost_wait_seconds": 0.01,
             "feasible": True, "violations": [], "epochs": 2, "epochs_done": 0, "status": "running"}
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return trial


def finish(study: optuna.Study, run: Path, trial: optuna.Trial, state: str, rng: random.Random):
    """Tell a started trial as the loop does; its weights file is written first, as a worker does."""
    trial.set_user_attr("status", state)
    trial.set_user_attr("epochs_done", 2 if state == "complete" else 1)
    trial.set_user_attr("train_seconds", 1.5)
    if state == "complete":
        (run / run_format.weights_path(trial.number)).write_bytes(b"w")
        trial.set_user_attr("weights", run_format.weights_path(trial.number))
        trial.set_user_attr("accuracy", rng.choice([0.5, 0.6, 0.7, 0.8]))
        return study.tell(trial, told_values(DEFAULT_OBJECTIVES, trial.user_attrs))
    if state == "infeasible":
        trial.set_user_attr("accuracy", 0.0)
        return study.tell(trial, told_values(DEFAULT_OBJECTIVES, trial.user_attrs))
    if state == "pruned":
        return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trial.set_user_attr("failure_reason", "synthetic failure, with a comma, and\na newline")
    return study.tell(trial, state=optuna.trial.TrialState.FAIL)


# 10.5 points: neighbouring accuracies of `finish` tie, so noise removes exact-front members from the front
@pytest.mark.parametrize("keep,accuracy_noise", [("front", 0.0), ("all", 0.0), ("front", 10.5)])
def test_live_tables_equal_a_rebuild_from_the_study(tmp_path, keep, accuracy_noise):
    rng = random.Random(3)
    run, config, study = new_run(tmp_path, "run", keep, accuracy_noise)
    tables = run_format.LiveTables(run, config, keep)
    tables.rebuild(study)
    running: list[optuna.Trial] = []
    evicted = started = step = tied = 0
    while started < N_TRIALS or running:
        if started < N_TRIALS and len(running) < 3 and (not running or rng.random() < 0.6):
            trial = start(study, rng, late_knob=started >= N_TRIALS * 2 // 3 and rng.random() < 0.5)
            running.append(trial)
            started += 1
            tables.update(trial.storage.get_trial(trial._trial_id))
        else:  # finish a random running trial: completions come out of trial order
            trial = running.pop(rng.randrange(len(running)))
            before = set(tables.front["trial"])
            state = rng.choices(["complete", "infeasible", "pruned", "failed"], [6, 1, 1, 1])[0]
            tables.update(finish(study, run, trial, state, rng))
            evicted += len(before - set(tables.front["trial"]))
            tied += len(set(tables.exact_trials) - set(tables.front_trials))
        step += 1
        if step % 12 == 0:
            assert_same_tables(run_format.load_run(run), rebuilt(run, config, keep, tmp_path))
    live = run_format.load_run(run)
    assert_same_tables(live, rebuilt(run, config, keep, tmp_path))
    assert evicted > 0 and "p.groups" in live.trials.columns  # the cases this test is about happened
    assert (tied > 0) == (accuracy_noise > 0)
    assert len(live.trials) == len(study.trials) == N_TRIALS
    on_disk = {p.name for p in (run / run_format.WEIGHTS).iterdir()}
    # "front" keeps the exact front's weights: a member tied off the shown front may come back onto it
    kept = run_format.exact_front(live.trials, config) if keep == "front" else \
        live.trials[live.trials["state"] == "complete"]
    assert on_disk == {Path(w).name for w in kept["weights"]}
    assert set(live.front["trial"]) <= set(kept["trial"])
    # appended rows: more lines than trials until the finished search rewrites the file
    assert len((run / run_format.TRIALS).read_text().splitlines()) > len(live.trials) + 1
    tables.rebuild(study)
    assert len(pd.read_csv(run / run_format.TRIALS)) == N_TRIALS
    assert_same_tables(run_format.load_run(run), live)


def test_a_torn_last_row_is_not_read(tmp_path):
    rng = random.Random(0)
    run, config, study = new_run(tmp_path, "run", "front")
    tables = run_format.LiveTables(run, config, "front")
    tables.rebuild(study)
    for _ in range(3):
        tables.update(finish(study, run, start(study, rng, late_knob=False), "complete", rng))
    whole = run_format.load_run(run)
    trial = start(study, rng, late_knob=False)
    line = run_format.csv_text([run_format.trial_row(trial.storage.get_trial(trial._trial_id), run)],
                               tables.columns, header=False)
    with open(run / run_format.TRIALS, "a") as f:  # a crash (or a reader) in the middle of an append
        f.write(line[:len(line) // 2])
    assert_same_tables(run_format.load_run(run), whole)
