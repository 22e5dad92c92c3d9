"""Finalists: K members of the brief front retrained for N epochs, so the front's accuracy axis is a long training's.

The K are picked from the brief front (feasible, complete, full-fidelity trials on their brief accuracy): the knee
first (cspnas.pareto.knee_index), then each time the member farthest (Euclidean, in the hypervolume's normalised
objective space) from those already picked, ties to the earlier front row. The picking is greedy, so the first K
of K + 1 are the same K: a later `cspnas finalize --finalists K+1` adds one.

Each finalist is trained from scratch in the driver process, one after the other, on the search's training
device, by the full trainer (cspnas.train.full.train_full) into RUN/finalists/trial-N/: the search's data split
(cspnas.search.settings.SearchSettings.data_spec), seed, and brief-training recipe (TrainConfig) with N epochs;
it is evaluated on the validation split after every epoch and on the test split where the data set has one. Its
result is recorded in the study (cspnas.run_format.record_final) as soon as it finishes, so a killed run redoes
only the finalist in progress, and that one from its last finished epoch (train_full's checkpoint).
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cspnas import run_format
from cspnas.errors import CspnasError, DiskFullError, Interrupted
from cspnas.faults import crash_point
from cspnas.pareto import Objective, knee_index, normalize

DEFAULT_FINALISTS = 3  # `cspnas finalize` without --finalists on a run that never had any


def pick_finalists(front: pd.DataFrame, objectives: list[Objective], k: int) -> list[int]:
    """Trial numbers of up to `k` front members: the knee, then farthest-point spread along the front."""
    if front.empty:
        return []
    pts = normalize(front[[o.column for o in objectives]].to_numpy(dtype=float), objectives)
    pts = np.nan_to_num(pts, nan=1.0)
    chosen = [knee_index(pts)]
    nearest = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    while len(chosen) < min(k, len(pts)):
        nearest[chosen] = -1.0  # never twice
        nxt = int(np.argmax(nearest))  # the first maximum: ties go to the earlier row
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(pts - pts[nxt], axis=1))
    return [int(front["trial"].iloc[i]) for i in chosen]


def check_finalist_device(device: str) -> None:
    """Finalists train in the driver process: its device must be here (a cluster's GPUs may not be)."""
    from cspnas.train import resolve_device

    try:
        resolve_device(device)
    except CspnasError as e:
        raise CspnasError(f"--finalists: finalists train in this process, on the search's device {device}, "
                          f"which it cannot use ({str(e).split(';')[0]}); drop --finalists and run "
                          "`cspnas finalize RUN` on a machine with that device") from None


def final_dir(run_dir: Path, trial: int) -> Path:
    return Path(run_dir) / run_format.FINALISTS / f"trial-{trial}"


def recorded_epochs(results: dict[int, dict[str, Any]]) -> int | None:
    """The epochs the run's finalists were trained for (None before any)."""
    epochs = [r["final_epochs"] for r in results.values() if r.get("final_epochs") is not None]
    return max(epochs) if epochs else None  # one value: check_epochs keeps it so


def check_epochs(run_dir: Path, results: dict[int, dict[str, Any]], epochs: int) -> None:
    """Finalists of one run share one length: their accuracies are compared on one front."""
    before = recorded_epochs(results)
    if before is not None and before != epochs:
        raise CspnasError(f"--final-epochs {epochs}: the finalists of {run_dir} were trained for {before} epochs, and "
                          f"finalists of different lengths cannot share a front; pass --final-epochs {before}")


def plan(run_dir: Path, config: dict[str, Any], study, k: int, epochs: int) -> tuple[list[int], list[int]]:
    """(the finalists picked, those of them without a final result yet)."""
    results = run_format.final_results(study)
    check_epochs(run_dir, results, epochs)
    rows = run_format.trial_rows(study, config, run_dir)
    brief, _ = run_format.brief_pareto_frame(run_format.rows_frame(rows), config)
    picked = pick_finalists(brief, run_format.objectives_of(config), k)
    return picked, [t for t in picked if t not in results]


def load_run_data(run_dir: Path, config: dict[str, Any]):
    """The run's data, split as its search split it; one line when it cannot be read here."""
    from cspnas.data import load_dataset
    from cspnas.search.settings import SearchSettings

    try:
        return load_dataset(**SearchSettings.from_dict(config["settings"]).data_spec())
    except CspnasError as e:
        raise CspnasError(f"{run_dir}: cannot read the run's data to train its finalists ({e}); put the data where "
                          "the search read it, then run again") from None


def run_finalists(run_dir: Path, config: dict[str, Any], study, k: int, epochs: int, *, device: str,
                  log: Callable[[str], None], stop: Callable[[], bool] = lambda: False, data=None,
                  on_start: Callable[[], None] = lambda: None,
                  on_result: Callable[[], None] = lambda: None) -> list[int]:
    """Train the finalists of the run that have no final result yet; returns the trials trained now.
    `stop()` is asked between training steps: when it says so, training stops with KeyboardInterrupt (the
    finished epochs are kept for the next run). `data`: the run's data if already loaded; `on_start` runs
    before the first training, `on_result` after each result is recorded. The caller holds the run's lock."""
    from cspnas.search.settings import SearchSettings

    settings = SearchSettings.from_dict(config["settings"])
    picked, todo = plan(run_dir, config, study, k, epochs)
    if not picked:
        log("finalists: the front is empty, nothing to retrain")
        return []
    if k > len(picked):
        log(f"finalists: --finalists {k} is more than the front's {len(picked)} members; retraining the whole front")
    if not todo:
        log(f"finalists: all {len(picked)} trained already ({epochs} epochs)")
        return []
    import torch  # not at the top: reading a run's finalists must stay light

    data = data if data is not None else load_run_data(run_dir, config)
    rows = run_format.trial_rows(study, config, run_dir)
    arch = {r["trial"]: r["arch_json"] for r in rows}
    on_start()
    done_before = len(picked) - len(todo)
    log(f"finalists: training {len(todo)} of {len(picked)} (trials {', '.join(map(str, todo))}) for {epochs} "
        f"epochs each on {device}" + (f"; {done_before} done before" if done_before else ""))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))  # as a trial trains (cspnas.search.trainable)
    try:
        return _train_all(run_dir, settings, study, rows, arch, todo, data, epochs, device, log, stop, on_result)
    finally:
        torch.set_num_threads(threads)


def _train_all(run_dir, settings, study, rows, arch, todo, data, epochs, device, log, stop, on_result) -> list[int]:
    trained = []
    for i, trial in enumerate(todo, 1):
        def on_epoch(rep, i=i, trial=trial) -> None:
            log(f"finalist {i}/{len(todo)} (trial {trial}): epoch {rep.epoch}/{epochs}, val acc "
                f"{100 * rep.val_acc:.2f}%, {rep.seconds:.1f} s")
            crash_point("finalist_epoch")  # tests only: its checkpoint is on disk by now

        result = _train_one(run_dir, trial, arch[trial], settings, data, epochs, device, stop, on_epoch)
        run_format.record_final(study, trial, result)
        trained.append(trial)
        on_result()
        if result.get("final_val_acc") is None:
            log(f"finalist trial {trial} failed: {result['final_failure']}")
        else:
            test = result["final_test_acc"]
            log(f"finalist trial {trial}: brief {_pct(_brief(rows, trial))} -> final val "
                f"{_pct(result['final_val_acc'])}"
                + ("" if test is None else f", test {_pct(test)}") + f" ({result['final_train_seconds']:.0f} s)")
    return trained


def _train_one(run_dir: Path, trial: int, arch_json: str, settings, data, epochs: int, device: str,
               stop: Callable[[], bool], on_epoch) -> dict[str, Any]:
    """One finalist's training (resumed from its last finished epoch where a killed run left one); its result."""
    from cspnas.space import ArchConfig
    from cspnas.train.full import CHECKPOINT, METRICS, WEIGHTS, FullTrainSettings, partial_dir, saved_settings, \
        train_full

    out = final_dir(run_dir, trial)
    job = FullTrainSettings(dataset=settings.dataset, epochs=epochs, batch_size=settings.train.batch_size,
                            lr=settings.train.lr, seed=settings.seed)
    metrics = None
    if (out / METRICS).is_file():  # trained, but the run was killed before the result was recorded
        try:
            metrics = json.loads((out / METRICS).read_text())
        except (OSError, ValueError):  # damaged: train it again
            metrics = None
        metrics = metrics if isinstance(metrics, dict) and metrics.get("epochs") == epochs else None
    if metrics is None:
        if out.exists() or saved_settings(out).get("epochs") not in (None, epochs):
            shutil.rmtree(out, ignore_errors=True)  # a leftover of another length: start over
            shutil.rmtree(partial_dir(out), ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)

        def step_hook() -> None:
            if stop():
                raise KeyboardInterrupt

        try:
            metrics = train_full(ArchConfig.from_json(arch_json), out, job, device=device,
                                 resume=(partial_dir(out) / CHECKPOINT).is_file(), on_epoch=on_epoch,
                                 recipe=replace(settings.train, epochs=epochs), data=data,
                                 step_hook=step_hook).metrics
        except (DiskFullError, Interrupted):
            raise
        except CspnasError as e:  # diverged (or too big for the device): a result too, not retried every run
            return {"final_epochs": epochs, "final_val_acc": None, "final_test_acc": None,
                    "final_train_seconds": None, "final_weights": None, "final_failure": str(e)}
    return {"final_val_acc": metrics["final_val_acc"], "final_test_acc": metrics["test_acc"], "final_epochs": epochs,
            "final_train_seconds": metrics["train_seconds"],
            "final_weights": str((out / WEIGHTS).relative_to(run_dir)),
            "final_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _brief(rows: list[dict[str, Any]], trial: int) -> float | None:
    return next((r["accuracy"] for r in rows if r["trial"] == trial), None)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def finalize(run_dir: str | Path, k: int | None = None, epochs: int | None = None, *,
             log: Callable[[str], None] = print) -> list[int]:
    """`cspnas finalize RUN`: train the finalists of a finished run (those not trained yet), then rewrite its
    tables (and dashboard.html, where there is one). Returns the trials trained now. Bad input, a run in use or
    data that cannot be read are refused before anything is written."""
    from cspnas.runlock import RunLock, live_holder
    from cspnas.search.interrupt import StopRequest
    from cspnas.search.settings import SearchSettings
    from cspnas.study_db import check_study_db

    for flag, value in (("--finalists", k), ("--final-epochs", epochs)):
        if value is not None and value < 1:
            raise CspnasError(f"{flag} must be >= 1, got {value}")
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "no such run directory"
        raise CspnasError(f"{run_dir}: {what}; pass the folder a search wrote, e.g. results/<name>")
    if not (run_dir / run_format.CONFIG).is_file() or not (run_dir / run_format.STUDY).is_file():
        raise CspnasError(f"{run_dir}: not a cspnas run (no config.yaml or study.db); pass the folder a search wrote")
    config = run_format.read_config(run_dir)
    settings = SearchSettings.from_dict(config["settings"])
    if settings.keep_weights == "none":
        raise CspnasError(f"{run_dir} keeps no weights (--keep-weights none), so its finalists' weights would not "
                          "be kept either; search again with --keep-weights front")
    holder = live_holder(run_dir)  # before the study is opened: opening it touches its SQLite files
    if holder is not None:
        raise CspnasError(f"{run_dir} is in use by {holder.describe()} (named in {run_dir / '.lock'}); wait for it "
                          "to end (if it is no longer running, delete that file), then run finalize again")
    check_study_db(run_dir / run_format.STUDY)
    device = str(config.get("train_device") or settings.device)
    check_finalist_device(device)
    data = load_run_data(run_dir, config)  # before the study is opened: a run without its data is left untouched
    study = run_format.open_study(run_format.open_storage(run_dir / run_format.STUDY), settings.objectives)
    if any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
        raise CspnasError(f"{run_dir}: its search stopped with trials still running; finish it with "
                          f"`cspnas search --resume {run_dir}` first")
    recorded = recorded_epochs(run_format.final_results(study))
    k = k or settings.finalists or DEFAULT_FINALISTS
    epochs = epochs or recorded or settings.final_epochs
    check_epochs(run_dir, run_format.final_results(study), epochs)

    def on_start() -> None:  # recorded, so that a bare `cspnas finalize RUN` or --resume continues the same job
        config["settings"] = {**config["settings"], "finalists": k, "final_epochs": epochs}
        config.setdefault("finalized", []).append({"at": dt.datetime.now().isoformat(timespec="seconds"),
                                                   "finalists": k, "final_epochs": epochs})
        run_format.write_yaml_atomic(run_dir / run_format.CONFIG, config)

    tables = run_format.LiveTables(run_dir, config, settings.keep_weights)
    with RunLock(run_dir, "finalize"), StopRequest() as stop:
        try:
            with stop.forcible():
                trained = run_finalists(run_dir, config, study, k, epochs, device=device, log=log,
                                        stop=lambda: stop.requested, data=data, on_start=on_start,
                                        on_result=lambda: tables.rebuild(study))
        except KeyboardInterrupt:
            signum = stop.signum or signal.SIGINT
            raise Interrupted(f"finalize stopped by {signal.Signals(signum).name}; continue it with "
                              f"`cspnas finalize {run_dir}`", signum) from None
        tables.rebuild(study)
        if (run_dir / "dashboard.html").is_file():
            from cspnas.results.dashboard import write_dashboard

            write_dashboard(run_dir)
    return trained
