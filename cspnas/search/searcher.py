"""Optuna under Ray Tune, with cost-before-training, hard constraints and honest fidelity.

`CspOptunaSearch` is Ray's OptunaSearch with three behaviours changed (see
shared/design/stack-notes.md for why the stock ones are wrong for NAS):

1. Cost first. `suggest` samples an architecture define-by-run, measures its params,
   MACs and latency in the driver (training paused by the MeasureGate), and stores the
   constraint values on the Optuna trial with `set_constraint` *before* any tell.
2. Infeasible candidates never reach Ray: they are told to Optuna at once (with their
   cost) and recorded; `suggest` moves on to the next candidate. Candidates identical to
   a finished trial (same arch hash) reuse its cost and result instead of retraining.
3. Fidelity: a trial Tune stopped early (ASHA) is told as PRUNED, never as a COMPLETE
   result with a truncated accuracy; failures are told as FAIL with their reason.

The searcher's state lives in study.db; Ray's pickled searcher checkpoints are not used
(resume reads the study), so `save`/`restore` are no-ops.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from cspnas.search.costs import CostMeter
from cspnas.search.faults import crash_point
from cspnas.search.settings import SearchSettings
from cspnas.space.searchspace import SearchSpace

log = logging.getLogger(__name__)

METRICS = ["accuracy", "macs", "latency_ms"]
MODES = ["max", "min", "min"]
FINAL_STATES = ("complete", "infeasible", "pruned", "failed")


@dataclass
class SearchContext:
    """What the searcher needs besides Optuna: the space, settings, data shape, cost meter, hooks."""

    settings: SearchSettings
    space: SearchSpace
    in_chs: int
    num_classes: int
    meter: CostMeter
    trial_config: Callable[[int, str], dict[str, Any]]  # (trial number, arch json) -> Ray config
    on_change: Callable[..., None] = lambda started=False: None  # after a trial starts or is told
    running: dict[str, int] = field(default_factory=dict)  # ray trial id -> optuna number


def count_final(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") in FINAL_STATES)


class CspOptunaSearch(OptunaSearch):
    def __init__(self, ctx: SearchContext, *, sampler: optuna.samplers.BaseSampler,
                 storage: optuna.storages.BaseStorage, study_name: str):
        self._ctx = ctx
        super().__init__(space=self._define_by_run, metric=list(METRICS), mode=list(MODES), sampler=sampler,
                         storage=storage, study_name=study_name)
        self._asked = count_final(self._ot_study)  # budget already used (resume)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def _define_by_run(self, trial):  # only to satisfy OptunaSearch; suggest() samples itself
        return None

    # -- suggest: sample, cost, constraints ------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        ctx = self._ctx
        while True:
            if self._asked >= ctx.settings.budget:
                return Searcher.FINISHED
            self._asked += 1
            ot_trial = self._ot_study.ask()
            config = self._prepare(ot_trial)
            if config is not None:
                self._ot_trials[trial_id] = ot_trial
                ctx.running[trial_id] = ot_trial.number
                ctx.on_change(started=True)
                crash_point("trial_started")
                return config

    def _prepare(self, ot_trial: optuna.Trial) -> dict | None:
        """Sample + cost one candidate; tell it at once when it needs no training (returns None)."""
        ctx, s = self._ctx, self._ctx.settings
        arch = ctx.space.sample(ot_trial, in_chs=ctx.in_chs, num_classes=ctx.num_classes)
        cost = ctx.meter.measure(arch)
        values, violations = s.constraints.check(params=cost["params"], macs=cost["macs"],
                                                 latency_ms=cost["latency_ms"])
        for key, value in values.items():
            ot_trial.set_constraint(key, value)
        attrs = {"arch": arch.to_json(indent=None), "arch_hash": arch.arch_hash(), "arch_summary": arch.summary(),
                 **cost, "feasible": not violations, "violations": violations, "epochs": s.train.epochs,
                 "epochs_done": 0, "status": "running"}
        for k, v in attrs.items():
            ot_trial.set_user_attr(k, v)
        if violations:
            self._tell(ot_trial, "infeasible", accuracy=0.0)
            return None
        twin = self._finished_twin(arch.arch_hash(), ot_trial.number)
        if twin is not None:
            for key in ("val_acc_per_epoch", "train_seconds", "weights"):
                if key in twin.user_attrs:
                    ot_trial.set_user_attr(key, twin.user_attrs[key])
            ot_trial.set_user_attr("duplicate_of", twin.number)
            ot_trial.set_user_attr("epochs_done", twin.user_attrs["epochs_done"])
            self._tell(ot_trial, "complete", accuracy=twin.user_attrs["accuracy"])
            return None
        return ctx.trial_config(ot_trial.number, attrs["arch"])

    def _finished_twin(self, arch_hash: str, number: int) -> optuna.trial.FrozenTrial | None:
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            if t.number != number and a.get("arch_hash") == arch_hash and a.get("status") == "complete" \
                    and a.get("epochs") == self._ctx.settings.train.epochs:
                return t
        return None

    def _tell(self, ot_trial: optuna.Trial, status: str, *, accuracy: float | None = None,
              reason: str | None = None) -> None:
        ot_trial.set_user_attr("status", status)
        if reason:
            ot_trial.set_user_attr("failure_reason", reason)
        a = ot_trial.user_attrs if hasattr(ot_trial, "user_attrs") else {}
        if status in ("complete", "infeasible"):
            ot_trial.set_user_attr("accuracy", float(accuracy))
            values = [float(accuracy), float(a["macs"]), float(a["latency_ms"] or 0.0)]
            self._ot_study.tell(ot_trial, values, state=TrialState.COMPLETE)
        elif status == "pruned":
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        crash_point("trial_told")
        self._ctx.on_change()

    # -- results from Ray ---------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        ot_trial.set_user_attr("val_acc_per_epoch", list(result.get("val_acc_per_epoch", [])))
        ot_trial.set_user_attr("epochs_done", int(result.get("epoch", 0)))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.pop(trial_id, None)
        self._ctx.running.pop(trial_id, None)
        if ot_trial is None:
            return
        result = result or {}
        epochs_done = int(result.get("epoch", 0))
        ot_trial.set_user_attr("epochs_done", epochs_done)
        ot_trial.set_user_attr("val_acc_per_epoch", list(result.get("val_acc_per_epoch", [])))
        if "train_seconds" in result:
            ot_trial.set_user_attr("train_seconds", float(result["train_seconds"]))
        if result.get("node"):
            ot_trial.set_user_attr("node", result["node"])
        status = result.get("status")
        if error:
            self._tell(ot_trial, "failed", reason="the trial's worker process crashed or was lost (see Ray logs)")
        elif status == "failed":
            self._tell(ot_trial, "failed", reason=result.get("failure_reason", "unknown"))
        elif status == "complete" and epochs_done >= self._ctx.settings.train.epochs:
            if result.get("weights"):
                ot_trial.set_user_attr("weights", result["weights"])
            self._tell(ot_trial, "complete", accuracy=float(result["val_acc"]))
        else:  # stopped by the scheduler: a low-fidelity result, not a point for the front
            self._tell(ot_trial, "pruned", reason=f"stopped by the scheduler after {epochs_done} epoch(s)")

    # -- Ray checkpointing: state is in study.db ------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def __getstate__(self) -> dict:
        # Ray may pickle the searcher with the experiment state; the study and callbacks
        # cannot (and need not) travel, since resume rebuilds everything from study.db.
        return {"_metric": self._metric, "_mode": self._mode}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def interrupted_to_failed(study: optuna.Study) -> list[int]:
    """On resume: trials left RUNNING by a dead driver are closed as 'interrupted' (not counted)."""
    closed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
        study._storage.set_trial_user_attr(t._trial_id, "failure_reason", "interrupted: the search stopped mid-trial; re-queued on resume")
        study.tell(t.number, state=TrialState.FAIL)
        if "arch" in t.user_attrs:
            study.enqueue_trial(t.params, skip_if_exists=False)
        closed.append(t.number)
    return closed

