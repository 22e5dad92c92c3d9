"""The Ray Tune scheduler of a search (`--scheduler none | asha | pareto`): which trials stop early.

A stopped trial is told to Optuna as PRUNED with the epochs it trained (cspnas.search.loop), so it
never reaches the front. `pareto` is the Pareto-aware rule of `cspnas.search.pareto_rungs`, which
this module only connects to Tune (it imports Ray: the search loads it once Ray runs): the trial's
exact costs come from the search loop (measured before training), its accuracy at the epoch from
the trainable's report.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from cspnas.search.pareto_rungs import GRACE_PERIOD, REDUCTION_FACTOR, ParetoRungs, rung_epochs
from cspnas.search.searcher import METRIC, MODE

if TYPE_CHECKING:
    from cspnas.search.loop import SearchLoop
    from cspnas.search.settings import SearchSettings


def make_scheduler(settings: "SearchSettings", loop: "SearchLoop"):
    """The Tune scheduler for `settings.scheduler` (None: every trial trains its full epochs)."""
    if settings.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(metric=METRIC, mode=MODE, time_attr="epoch", max_t=settings.train.epochs,
                             grace_period=GRACE_PERIOD, reduction_factor=REDUCTION_FACTOR)
    if settings.scheduler == "pareto":
        from cspnas.run_format import objectives_of

        rungs = ParetoRungs(objectives_of(loop.config), rung_epochs(settings.train.epochs), settings.pareto_margin)
        rungs.rebuild((t.number, t.user_attrs) for t in loop.study.get_trials(deepcopy=False))  # a resume's
        return ParetoScheduler(rungs, loop.trial_attrs, loop.stop_reasons.__setitem__)
    return None


class ParetoScheduler(FIFOScheduler):
    """Asks `rungs` at every report: `attrs(ray_trial_id)` gives the trial's recorded costs (None: not
    a trial of ours), `on_stop(trial number, reason)` hears why one was stopped."""

    def __init__(self, rungs: ParetoRungs, attrs: Callable[[str], Mapping[str, Any] | None],
                 on_stop: Callable[[int, str], None]) -> None:
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self.rungs, self._attrs, self._on_stop = rungs, attrs, on_stop

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        found = self._attrs(trial.trial_id)
        if found is None or result.get("status") != "running" or "trial" not in result:
            return TrialScheduler.CONTINUE  # final and failure reports are no rung arrivals
        decision = self.rungs.arrive(found["arch_hash"], int(result["trial"]), int(result["epoch"]),
                                     float(result[METRIC]), found)
        if decision.go:
            return TrialScheduler.CONTINUE
        self._on_stop(int(result["trial"]), decision.reason)
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"Pareto-aware rungs: trials per rung {self.rungs.counts()}, margin {self.rungs.margin:g}"

    def __getstate__(self) -> dict:
        # Tune may pickle the scheduler with its experiment state; the records need not travel (a
        # resume rebuilds them from study.db), and the loop's callbacks cannot
        return {"_metric": self._metric, "_mode": self._mode}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
