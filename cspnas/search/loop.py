"""The search loop: one object that owns the study, the running trials, the tables and the status.

`Proposer.propose` is the pure step (no Ray): ask Optuna, sample an architecture, measure its
cost, set the constraint values on the trial *before* any tell, and tell at once what needs no
training (infeasible candidates; repeats of a tried architecture, which are drawn again). `SearchLoop` drives it from Ray
Tune through the thin adapter in `searcher.py`: it hands proposals to Tune, records epochs and
final results (a trial the scheduler stopped early is PRUNED, never a COMPLETE point with a
truncated accuracy; failures are FAIL with their reason), and records every change in the tables
(`run_format.LiveTables`: a row appended per change, so the cost per trial does not grow with the
study), the live dashboard and the status line. All state is in study.db, so a resumed search
rebuilds the loop and the tables from the study alone.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from cspnas import run_format
from cspnas.cost.onnx_runtime import QuantizationError
from cspnas.cost.zero_cost import SCORES
from cspnas.objectives import OBJECTIVES, told_values
from cspnas.run_format import FINAL_STATES, TRAINED_STATES, full_fidelity
from cspnas.search.costs import CostMeter
from cspnas.faults import cost_fault, crash_point
from cspnas.search.interrupt import StopRequest, is_disk_full, tune_stopper
from cspnas.search.packing import WORKER_ATTRS
from cspnas.search.progress import Progress, Running, Status
from cspnas.search.settings import SearchSettings
from cspnas.space.searchspace import SearchSpace

log = logging.getLogger(__name__)

# Draws in a row that repeat an architecture already tried before the space counts as exhausted.
RESAMPLE_LIMIT = 50
# The end-of-search confirmation pass: passes per front member, and rounds (a member that joins the
# front once others were re-timed is re-timed in the next round).
CONFIRM_PASSES = 5
CONFIRM_ROUNDS = 3
# Infeasible candidates in a row that end a search that cannot find feasible ones (with --screen-limit).
INFEASIBLE_RUN_LIMIT = 500


def count_final(study: optuna.Study) -> int:
    """Architectures trained: what --budget counts (resume continues from here)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") in TRAINED_STATES)


def count_screened(study: optuna.Study) -> int:
    """Candidates screened: trained or found infeasible (what --screen-limit counts)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") in FINAL_STATES)


def _live_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> optuna.Trial:
    """A writable handle on a trial another process left RUNNING. Optuna has no public way to
    reopen one (study.ask only makes new trials), so this is the one place that reads the
    private `_trial_id`; `optuna.Trial(study, trial_id)` itself is public."""
    return optuna.Trial(study, frozen._trial_id)


def interrupt(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """Close a trial the search stopped mid-training as 'interrupted': it uses no budget, and the
    next resume re-queues its architecture once (`interrupted_to_failed`)."""
    again = "requeued_from" not in attrs  # a re-queued trial interrupted again is not re-queued forever
    trial.set_user_attr("status", "interrupted")
    trial.set_user_attr("failure_reason", "interrupted: the search stopped mid-trial; " +
                        ("re-queued on resume" if again else "interrupted twice, not re-queued again"))
    return study.tell(trial, state=TrialState.FAIL)


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A running trial's record as of now, from the handle's own copy (which Optuna keeps current):
    no storage read (`study.get_trials` reads the whole study)."""
    return optuna.trial.FrozenTrial(
        number=trial.number, state=TrialState.RUNNING, value=None, values=None, datetime_start=trial.datetime_start,
        datetime_complete=None, params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
        system_attrs={}, intermediate_values={}, trial_id=-1)  # the id is not ours to read; no row needs it


def interrupted_to_failed(study: optuna.Study) -> list[int]:
    """On resume: trials left RUNNING by a dead driver are closed as 'interrupted' (not counted);
    then every interrupted architecture not yet re-queued is re-queued (once). Returns those re-queued."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        interrupt(study, _live_trial(study, t), t.user_attrs)
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("requeued_from") for t in trials}
    requeued = []
    for t in trials:
        a = t.user_attrs
        if a.get("status") == "interrupted" and "arch" in a and "requeued_from" not in a and t.number not in done:
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number}, skip_if_exists=False)
            requeued.append(t.number)
    return requeued


@dataclass
class DriverTime:
    """Where the driver's time went while Ray Tune ran the trials: in the loop's callbacks (busy:
    measuring costs, of which waiting for the trainers to pause, and the tables and status line),
    or waiting for Ray (idle). A driver that is rarely idle makes trainers wait for new trials."""

    wall_s: float = 0.0
    busy_s: float = 0.0
    cost_s: float = 0.0
    cost_wait_s: float = 0.0
    tables_s: float = 0.0

    def record(self) -> dict[str, float]:
        """The shares of the wall time, for config.yaml's `driver` (one entry per search session)."""
        def share(seconds: float) -> float:
            return round(seconds / self.wall_s, 4) if self.wall_s > 0 else 0.0
        return {"wall_seconds": round(self.wall_s, 2), "busy_share": share(self.busy_s),
                "idle_share": share(max(0.0, self.wall_s - self.busy_s)), "cost_share": share(self.cost_s),
                "cost_wait_share": share(self.cost_wait_s), "tables_share": share(self.tables_s)}

    def line(self) -> str:
        r = self.record()
        return (f"driver: busy {r['busy_share']:.0%} of {self.wall_s:.0f} s (measuring costs {r['cost_share']:.0%}, "
                f"of which waiting for trainers to pause {r['cost_wait_share']:.0%}; tables and status "
                f"{r['tables_share']:.0%}), idle {r['idle_share']:.0%}")


@dataclass(frozen=True)
class Candidate:
    """A proposed architecture that needs training."""

    trial: optuna.Trial
    arch_json: str


class Proposer:
    """Sample, cost, constrain; tell what needs no training. No Ray, no files. No proposal repeats
    an architecture that is finished or in flight: such a draw is told as 'resampled' (it uses no
    budget) and the sampler draws again. Infeasible candidates use no budget either (it counts
    architectures trained); `screen_limit` screened candidates, or INFEASIBLE_RUN_LIMIT infeasible
    ones in a row, end a search that cannot find feasible ones (`given_up` says why).

    --prefilter SCORE:F: a feasible candidate whose zero-cost score ranks in the bottom fraction F of
    the feasible candidates scored before it in this run (the study's, so a resume keeps them; each
    architecture once; ties count half) is told 'prefiltered' (Optuna PRUNED: never on the front, no
    budget, counted by --screen-limit), once `prefilter_warmup` of them were scored."""

    def __init__(self, study: optuna.Study, settings: SearchSettings, space: SearchSpace, meter: CostMeter,
                 in_chs: int, num_classes: int):
        self.study, self.settings, self.space, self.meter = study, settings, space, meter
        self.in_chs, self.num_classes = in_chs, num_classes
        self.asked = count_final(study)  # budget already used (resume)
        self.screened = count_screened(study)
        self.infeasible_run = 0  # infeasible candidates in a row
        self.nearest: tuple[float, int, str, list[str], list[str]] | None = None  # least excess:
        #   (excess, trial, arch summary, violations, the flags of the limits it breaks)
        self.given_up: str | None = None  # why screening stopped before the budget was trained
        self.told: list[optuna.trial.FrozenTrial] = []  # trials told since the caller last cleared it
        self.exhausted = False  # RESAMPLE_LIMIT draws in a row repeated tried architectures
        self._tried: dict[str, int] | None = None  # arch hash -> trial, of finished and running trials
        self.prefilter = settings.prefilter_rule()  # (score name, fraction) or None
        self._scored: dict[str, float] | None = None  # --prefilter: arch hash -> score of feasible candidates
        self._last: str | None = None  # the status the last candidate that needs no training was told

    def propose(self) -> Candidate | None:
        """The next candidate to train, or None when the budget is spent or the space exhausted."""
        if self._tried is None:  # read once, after a resume closed the interrupted trials
            self._tried = {t.user_attrs["arch_hash"]: t.number for t in self.study.get_trials(deepcopy=False)
                           if "arch_hash" in t.user_attrs
                           and (t.user_attrs.get("status") in FINAL_STATES or t.state == TrialState.RUNNING)}
        repeats = 0
        while self.asked < self.settings.budget:
            if self.given_up is None:
                self.given_up = self._give_up()
            if self.given_up is not None:
                return None
            trial = self.study.ask()
            arch = self.space.sample(trial, in_chs=self.in_chs, num_classes=self.num_classes)
            earlier = self._tried.get(arch.arch_hash())
            if earlier is not None:
                self._resampled(trial, arch, earlier)
                repeats += 1
                if repeats >= RESAMPLE_LIMIT:
                    self.exhausted = True
                    return None
                continue
            self._tried[arch.arch_hash()] = trial.number
            self.screened += 1
            candidate = self._consider(trial, arch)
            if candidate is not None:
                self.asked += 1
                self.infeasible_run = 0
                return candidate
            if self._last == "infeasible":
                self.infeasible_run += 1
        return None

    def _give_up(self) -> str | None:
        """The one line that ends a search that keeps finding only infeasible candidates, or None."""
        limit = self.settings.screen_limit or 50 * self.settings.budget
        if self.screened < limit and self.infeasible_run < INFEASIBLE_RUN_LIMIT:
            return None
        why = (f"{self.screened} candidates screened (--screen-limit {limit})" if self.screened >= limit
               else f"{self.infeasible_run} infeasible candidates in a row")
        near = ""
        if self.nearest is not None:
            _, number, summary, violations, flags = self.nearest
            near = f"; the nearest, trial {number} ({summary}), breaks {', '.join(violations)}: relax {' and '.join(flags)}"
        return f"stopped: {why}, {self.asked} of {self.settings.budget} trained{near}"

    def _resampled(self, trial: optuna.Trial, arch, earlier: int) -> None:
        for key, value in (("arch_hash", arch.arch_hash()), ("arch_summary", arch.summary()),
                           ("duplicate_of", earlier),
                           ("failure_reason", f"repeats trial {earlier}'s architecture; the sampler drew again")):
            trial.set_user_attr(key, value)
        self.tell(trial, "resampled")

    def _consider(self, trial: optuna.Trial, arch) -> Candidate | None:
        s = self.settings
        try:
            cost_fault(trial.number)  # tests only (CSPNAS_TEST_FAULT=quantize@N); a no-op otherwise
            cost = self.meter.measure(arch, scores=False)
        except QuantizationError as e:  # this candidate cannot ship as int8: it fails, the search goes on
            for key, value in (("arch", arch.to_json(indent=None)), ("arch_hash", arch.arch_hash()),
                               ("arch_summary", arch.summary()), ("epochs", s.train.epochs), ("epochs_done", 0)):
                trial.set_user_attr(key, value)
            self.tell(trial, "failed", reason=str(e))
            self.asked += 1  # a failed candidate uses budget (count_final counts it on resume too)
            return None
        values, violations = s.constraints.check(cost)
        for key, value in values.items():
            trial.set_constraint(key, value)
        if not violations:  # zero-cost scores for the candidates that may train (outside the gate)
            cost = self.meter.measure(arch)
        attrs = {"arch": arch.to_json(indent=None), "arch_hash": arch.arch_hash(), "arch_summary": arch.summary(),
                 **cost, "feasible": not violations, "violations": violations, "epochs": s.train.epochs,
                 "epochs_done": 0, "status": "running"}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if violations:
            excess = max(values.values())
            if self.nearest is None or excess < self.nearest[0]:
                flags = [OBJECTIVES[name].flag for name, value in values.items() if value > 0]
                self.nearest = (excess, trial.number, arch.summary(), violations, flags)
            self.tell(trial, "infeasible", accuracy=0.0)
            return None
        if self._prefiltered(trial, arch.arch_hash(), cost):
            return None
        return Candidate(trial, attrs["arch"])

    def _prefiltered(self, trial: optuna.Trial, arch_hash: str, cost: dict[str, Any]) -> bool:
        """--prefilter: tell the (feasible) candidate 'prefiltered' if its score ranks too low."""
        if self.prefilter is None:
            return False
        name, fraction = self.prefilter
        score = SCORES[name]
        if self._scored is None:  # read once: every feasible candidate the study scored (resume included)
            self._scored = {t.user_attrs["arch_hash"]: float(t.user_attrs[score.column])
                            for t in self.study.get_trials(deepcopy=False)
                            if t.user_attrs.get("feasible") is True and t.user_attrs.get(score.column) is not None
                            and t.number != trial.number}
        value = cost.get(score.column)
        earlier = [v for h, v in self._scored.items() if h != arch_hash]
        if value is None:  # not a finite number: no rank, trained as without --prefilter
            return False
        self._scored[arch_hash] = float(value)
        if len(earlier) < self.settings.prefilter_warmup:
            return False
        sign = 1.0 if score.higher_is_better else -1.0
        below = sum(sign * v < sign * value for v in earlier) + 0.5 * sum(v == value for v in earlier)
        rank = below / len(earlier)
        if rank >= fraction:
            return False
        trial.set_user_attr("prefilter_rank", rank)
        self.tell(trial, "prefiltered", reason=f"{name} {value:.4g} beats only {rank:.0%} of the {len(earlier)} feasible "
                                               f"candidates scored before it (--prefilter {name}:{fraction:g})")
        return True

    def tell(self, trial: optuna.Trial, status: str, *, accuracy: float | None = None,
             reason: str | None = None) -> None:
        """Record the outcome on the trial, then tell Optuna (constraints were set before)."""
        trial.set_user_attr("status", status)
        self._last = status
        if reason:
            trial.set_user_attr("failure_reason", reason)
        if status in ("complete", "infeasible"):
            trial.set_user_attr("accuracy", float(accuracy))
            told = self.study.tell(trial, told_values(self.settings.objectives, trial.user_attrs),
                                   state=TrialState.COMPLETE)
        elif status in ("pruned", "prefiltered"):
            told = self.study.tell(trial, state=TrialState.PRUNED)
        else:
            told = self.study.tell(trial, state=TrialState.FAIL)
        self.told.append(told)
        crash_point("trial_told")


class SearchLoop:
    """The search's one orchestrator: prepare, run (Ray Tune), refresh after every change, finish."""

    def __init__(self, *, settings: SearchSettings, space: SearchSpace, config: dict[str, Any], run_dir: Path,
                 study: optuna.Study, meter: CostMeter, in_chs: int, num_classes: int,
                 trial_spec: dict[str, Any], live: bool | None = None, dashboard: bool = True,
                 t0: float | None = None):
        self.settings, self.config, self.run_dir, self.study = settings, config, run_dir, study
        self.proposer = Proposer(study, settings, space, meter, in_chs, num_classes)
        self.trial_spec = trial_spec  # the Ray config shared by every trial (data, training, run_dir)
        self.dashboard = dashboard
        self.t0 = time.monotonic() if t0 is None else t0
        self.running: dict[str, optuna.Trial] = {}  # Ray trial id -> its Optuna trial
        self._training: dict[str, tuple[float, int, float]] = {}  # Ray trial id -> (started, epochs, seconds)
        self.closed: list[int] = []
        self.progress = Progress(live=live)
        self.tables = run_format.LiveTables(run_dir, config, settings.keep_weights)
        self._tally = _Tally()
        self._last_dashboard, self._dashboard_every = 0.0, 15.0
        self.stop: StopRequest | None = None  # Ctrl-C / SIGTERM; set by the caller around run()
        self.disk_full: str | None = None  # why the disk-full stop happened
        self.on_trial_start: Callable[[], None] = lambda: None  # e.g. record the Ray processes now running
        self.driver = DriverTime()  # accumulating while Tune runs
        self.driver_record: dict[str, float] | None = None  # DriverTime.record() of the last run, when it trained
        self.stop_reasons: dict[int, str] = {}  # trial number -> why the scheduler stopped it (if it says)

    def trial_attrs(self, key: str) -> dict[str, Any] | None:
        """The recorded facts (costs included) of the running trial Ray knows as `key`, or None."""
        trial = self.running.get(key)
        return None if trial is None else trial.user_attrs

    @property
    def trials(self):
        """The trials table (one row per trial; built from memory, O(study): for the end of a search)."""
        return self.tables.frame()

    @property
    def front(self):
        return self.tables.front

    @property
    def hypervolume(self) -> float:
        return self.tables.hypervolume

    @property
    def stopping(self) -> bool:
        return self.disk_full is not None or (self.stop is not None and self.stop.requested)

    def _stop_trials(self) -> bool:
        """Asked by Tune's stopper every step; once stopping, the trainers stop at their next step."""
        gate = self.proposer.meter.gate
        if self.stopping and gate is not None:
            gate.stop_training()
        return self.stopping

    # -- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Close what a dead driver left running, seed the cost cache, count the budget used."""
        self.closed = interrupted_to_failed(self.study)
        self.proposer.meter.remember(self.study)
        self.proposer.asked = count_final(self.study)

    def run(self, resources: dict[str, float], scheduler: Any = None) -> None:
        """Train proposals under Ray Tune until the budget is spent (Ray must be started)."""
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        from cspnas.search.searcher import LoopSearcher
        from cspnas.search.trainable import train_candidate

        with self.progress:
            if self.closed:
                self.progress.log(f"resume: trial(s) {self.closed} were interrupted; their architectures are re-queued")
            self.refresh(rebuild=True)
            if count_final(self.study) < self.settings.budget:
                if self.proposer.meter.gate is not None:
                    self.proposer.meter.gate.allow_training()
                # Tune's own experiment state is never read (resume reads study.db): a failure to save it
                # (a full disk) must not print its traceback over our one line
                logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
                tuner = tune.Tuner(
                    tune.with_resources(train_candidate, resources),
                    tune_config=tune.TuneConfig(
                        search_alg=ConcurrencyLimiter(LoopSearcher(self), self.settings.concurrency),
                        scheduler=scheduler, num_samples=-1, reuse_actors=True),
                    run_config=tune.RunConfig(name="tune", storage_path=str((self.run_dir / ".ray").resolve()),
                                              verbose=0, failure_config=tune.FailureConfig(max_failures=1),
                                              stop=tune_stopper(self._stop_trials)),
                )
                self.driver, spent, fit_start = DriverTime(), dict(self.proposer.meter.spent), time.monotonic()
                try:
                    with self.stop.forcible() if self.stop is not None else contextlib.nullcontext():
                        tuner.fit()
                except Exception as e:
                    if not is_disk_full(e):
                        raise
                    self.disk_full = _first_line(e)
                self.driver.wall_s = time.monotonic() - fit_start
                self.driver.cost_s = self.proposer.meter.spent["cost_seconds"] - spent["cost_seconds"]
                self.driver.cost_wait_s = self.proposer.meter.spent["cost_wait_seconds"] - spent["cost_wait_seconds"]
                self.driver_record = self.driver.record()  # before finish() rebuilds the tables outside Tune
                self.progress.log(self.driver.line())
                self._interrupt_running()
            if self.proposer.given_up is not None:
                self.progress.log(self.proposer.given_up)
            if not self.stopping:
                self._confirm_front()
            if self.proposer.exhausted:
                self.progress.log(f"search space exhausted: {RESAMPLE_LIMIT} draws in a row repeated architectures "
                                  f"already tried; stopping at {count_final(self.study)} of {self.settings.budget}")
            if self.disk_full is None:  # with a full disk the tables cannot be written; study.db has it all
                self.finish()

    def _confirm_front(self) -> None:
        """Re-time the front's unconfirmed members (CONFIRM_PASSES interleaved passes through the
        search's measurer) and recompute the front on the confirmed latencies; members that join
        the front then are confirmed too (a few rounds at most). A resume of a finished run does it
        for whatever is still unconfirmed."""
        s = self.settings
        if "latency" not in s.objectives and s.constraints.max_latency_ms is None:
            return
        self.refresh(rebuild=True)
        before = len(self.front)
        for _ in range(CONFIRM_ROUNDS):
            todo = [int(t) for t, done in zip(self.front["trial"], self.front["confirmed"]) if not done]
            if not todo:
                break
            arch = dict(zip(self.trials["trial"], self.trials["arch_json"]))
            found = self.proposer.meter.confirm([arch[t] for t in todo], CONFIRM_PASSES)
            run_format.record_confirmed(self.study, dict(zip(todo, found)))
            self.refresh(rebuild=True)
            self.progress.log(f"confirmation: re-timed {len(todo)} front member(s) in {CONFIRM_PASSES} "
                              f"interleaved passes; front {before} -> {len(self.front)}, "
                              f"{int(self.front['marginal'].sum())} marginal")

    def _interrupt_running(self) -> None:
        """Trials Tune stopped because the search was asked to stop: interrupted, re-queued once."""
        for key, trial in list(self.running.items()):
            try:
                self.proposer.told.append(interrupt(self.study, trial, trial.user_attrs))
            except Exception as e:  # a full disk: left RUNNING, the next resume closes it the same way
                if not is_disk_full(e):
                    raise
            del self.running[key]
            self._training.pop(key, None)

    def finish(self) -> None:
        crash_point("finishing")
        if self.stopping:  # rewrite the live dashboard now: with no trial running it stops reloading itself
            self._last_dashboard = 0.0
        self.refresh(rebuild=True)

    # -- what the Ray adapter forwards (the driver's busy time) -------------------------------------
    @contextlib.contextmanager
    def _busy(self, part: str = "busy_s"):
        started = time.monotonic()
        try:
            yield
        finally:
            setattr(self.driver, part, getattr(self.driver, part) + time.monotonic() - started)

    def start(self, key: str) -> dict[str, Any] | None:
        with self._busy():
            return self._start(key)

    def on_result(self, key: str, result: dict[str, Any]) -> None:
        with self._busy():
            self._on_result(key, result)

    def on_complete(self, key: str, result: dict[str, Any] | None, error: bool) -> None:
        with self._busy():
            self._on_complete(key, result, error)

    def _start(self, key: str) -> dict[str, Any] | None:
        """The Ray config of the next trial to train, or None when the budget is spent (or the
        search was asked to stop)."""
        if self.stopping:
            return None
        candidate = self.proposer.propose()
        if candidate is None:
            self.refresh()
            return None
        self.running[key] = candidate.trial
        self._training[key] = (time.monotonic(), 0, 0.0)
        self.on_trial_start()
        self.refresh(_frozen(candidate.trial))
        crash_point("trial_started")
        return {"trial": candidate.trial.number, "arch": candidate.arch_json, **self.trial_spec}

    def _on_result(self, key: str, result: dict[str, Any]) -> None:
        trial = self.running.get(key)
        if trial is None:
            return
        trial.set_user_attr("val_acc_per_epoch", list(result.get("val_acc_per_epoch", [])))
        trial.set_user_attr("epochs_done", int(result.get("epoch", 0)))
        started = self._training.get(key, (time.monotonic(), 0, 0.0))[0]
        self._training[key] = (started, int(result.get("epoch", 0)), float(result.get("train_seconds", 0.0)))
        self.progress.update(self.status())  # the epoch moves the status line; the tables wait for the tell

    def _on_complete(self, key: str, result: dict[str, Any] | None, error: bool) -> None:
        trial = self.running.pop(key, None)
        self._training.pop(key, None)
        if trial is None:
            return
        result = result or {}
        epochs_done = int(result.get("epoch", 0))
        trial.set_user_attr("epochs_done", epochs_done)
        trial.set_user_attr("val_acc_per_epoch", list(result.get("val_acc_per_epoch", [])))
        if "train_seconds" in result:
            trial.set_user_attr("train_seconds", float(result["train_seconds"]))
        if result.get("node"):
            trial.set_user_attr("node", result["node"])
        for key in WORKER_ATTRS:  # how the worker fared (memory, admission), for the run's audit
            if key in result:
                trial.set_user_attr(key, result[key])
        status, tell = result.get("status"), self.proposer.tell
        reason = str(result.get("failure_reason", ""))
        if status == "failed" and is_disk_full(reason):  # the trial is not at fault: stop, re-queue it
            self.disk_full = reason
            self.proposer.told.append(interrupt(self.study, trial, trial.user_attrs))
        elif self.stopping and not (status == "complete" and full_fidelity(epochs_done, self.settings.train.epochs)):
            self.proposer.told.append(interrupt(self.study, trial, trial.user_attrs))  # its worker saw the Ctrl-C too
        elif error:
            tell(trial, "failed", reason="the trial's worker process crashed or was lost (see Ray logs)")
        elif status == "failed":
            tell(trial, "failed", reason=reason or "unknown")
        elif status == "complete" and full_fidelity(epochs_done, self.settings.train.epochs):
            if result.get("weights"):
                trial.set_user_attr("weights", result["weights"])
            if result.get("val_acc_int8") is not None:
                trial.set_user_attr("val_acc_int8", float(result["val_acc_int8"]))
            confirmed_ok = self._confirm_latency(trial, float(result["val_acc"]))
            tell(trial, "complete" if confirmed_ok else "infeasible", accuracy=float(result["val_acc"]))
        else:  # stopped by the scheduler: a low-fidelity result, not a point for the front
            why = self.stop_reasons.pop(trial.number, "")
            tell(trial, "pruned", reason=f"stopped by the scheduler after {epochs_done} epoch(s)"
                                         + (why and f": {why}"))
        self.refresh()

    def _confirm_latency(self, trial: optuna.Trial, accuracy: float) -> bool:
        """--confirm-latency: a trial about to join the front with a predicted latency is timed now and
        the measured latency wins (also in its constraint values). False if it then breaks a limit."""
        a = trial.user_attrs
        if not self.settings.confirm_latency or a.get("latency_source") != "predicted" \
                or _dominated({**a, "accuracy": accuracy}, self.front, self.settings.objectives):
            return True
        from cspnas.space import ArchConfig

        measured = self.proposer.meter.confirm_predicted(ArchConfig.from_json(a["arch"]))
        for key, value in measured.items():
            trial.set_user_attr(key, value)
        values, violations = self.settings.constraints.check({**a, **measured})
        for key, value in values.items():
            trial.set_constraint(key, value)
        trial.set_user_attr("feasible", not violations)
        trial.set_user_attr("violations", violations)
        return not violations

    # -- tables, dashboard, status line -----------------------------------------------------------
    def refresh(self, *changed: optuna.trial.FrozenTrial, rebuild: bool = False) -> None:
        """Record the trials told since the last call (and `changed`) in the tables, a row each, or
        rebuild both tables from the study (start, finish); keep the live dashboard current."""
        with self._busy("tables_s"):
            self._refresh(changed, rebuild)

    def _refresh(self, changed, rebuild: bool) -> None:
        changed = (*self.proposer.told, *changed)
        self.proposer.told.clear()
        try:
            if rebuild:
                self.tables.rebuild(self.study)
                self._tally = _Tally(self.tables.rows.values())
            for trial in changed:
                old = self.tables.rows.get(trial.number)
                self._tally.replace(old, self.tables.update(trial))
        except Exception as e:  # called from Ray's callbacks: a full disk stops the search, not Ray
            if not is_disk_full(e):
                raise
            self.disk_full = self.disk_full or _first_line(e)  # study.db has it all; resume rewrites the tables
            return
        if self.dashboard:
            self._refresh_dashboard()
        self.progress.update(self.status())

    def _refresh_dashboard(self) -> None:
        """Keep RUN/dashboard.html current while searching (cheap version: no importance fit). It reads
        and plots the whole run, so it is rewritten at most every 15 s, and less often when it is slow
        (at most 5% of the driver's time)."""
        if not self.tables.rows or time.monotonic() - self._last_dashboard < self._dashboard_every:
            return
        from cspnas.results.dashboard import write_dashboard

        started = time.monotonic()
        try:
            write_dashboard(self.run_dir, importance=False)
        except Exception as e:  # a plotting problem must never stop a search
            log.warning("dashboard refresh failed: %s", e)
        self._last_dashboard = time.monotonic()
        self._dashboard_every = max(15.0, 20 * (self._last_dashboard - started))

    def status(self) -> Status:
        tally, now = self._tally, time.monotonic()
        done = sum(tally.states[k] for k in TRAINED_STATES)
        running = tuple(Running(self.running[k].number, epochs, now - started)
                        for k, (started, epochs, _) in self._training.items() if k in self.running)
        seconds, epochs = tally.seconds, tally.epochs  # trials that trained, then the running ones
        for _, e, s in self._training.values():
            seconds, epochs = seconds + s, epochs + e
        return Status(done=done, budget=self.settings.budget, running=running,
                      infeasible=tally.states["infeasible"], prefiltered=tally.states["prefiltered"],
                      failed=tally.states["failed"],
                      pruned=tally.states["pruned"], best_accuracy=tally.best_accuracy,
                      front_size=len(self.front), hypervolume=self.hypervolume, elapsed_s=now - self.t0,
                      epochs=self.settings.train.epochs, epoch_seconds=seconds / epochs if epochs else None,
                      trained_share=(done - tally.untrained) / done if done else 1.0,
                      concurrency=self.settings.concurrency)


def _dominated(row: dict[str, Any], front, objectives) -> bool:
    """Whether a front member is at least as good as `row` in every objective and better in one."""
    from cspnas.objectives import OBJECTIVES

    if front is None or not len(front):
        return False
    specs = [OBJECTIVES[n] for n in objectives]
    sign = {s.column: (-1.0 if s.direction == "max" else 1.0) for s in specs}  # as minimisation
    mine = {c: sign[c] * float(row[c]) for c in sign}
    for other in front.to_dict(orient="records"):
        theirs = {c: sign[c] * float(other[c]) for c in sign}
        if all(theirs[c] <= mine[c] for c in sign) and any(theirs[c] < mine[c] for c in sign):
            return True
    return False


class _Tally:
    """What the status line counts over the trials table, kept up to date a row at a time (a row
    replaced subtracts the old one) instead of recounted after every trial."""

    def __init__(self, rows=()):
        self.states: Counter[str] = Counter()
        self.seconds, self.epochs, self.untrained = 0.0, 0, 0  # training seconds and epochs done; untrained
        self.best_accuracy: float | None = None
        for row in rows:
            self.replace(None, row)

    def replace(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        for row, sign in ((old, -1), (new, 1)):
            if row is None:
                continue
            self.states[row["state"]] += sign
            if row["state"] not in FINAL_STATES:
                continue
            twin = _present(row.get("duplicate_of"))
            if twin and row["state"] in TRAINED_STATES:  # a budget trial that copied a twin's training
                self.untrained += sign
            if row["state"] in ("infeasible", "prefiltered") or twin:  # finished without training
                continue
            if (row.get("epochs_done") or 0) > 0:
                self.seconds += sign * (row["train_seconds"] if _present(row.get("train_seconds")) else 0.0)
                self.epochs += sign * row["epochs_done"]
        if new["state"] == "complete" and _present(new.get("accuracy")):  # a trial's accuracy never changes
            self.best_accuracy = max(self.best_accuracy or 0.0, float(new["accuracy"]))


def _present(value: Any) -> bool:
    return value is not None and value == value  # NaN != NaN


def _first_line(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:  # the root cause says what filled up
        e = e.__cause__ or e.__context__
    return (str(e).splitlines() or [type(e).__name__])[0]
