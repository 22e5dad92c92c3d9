"""The search loop: one object that owns the study, the running trials, the tables and the status.

`Proposer.propose` is the pure step (no Ray): ask Optuna, sample an architecture, measure its
cost, set the constraint values on the trial *before* any tell, and tell at once what needs no
training (infeasible candidates; repeats of a tried architecture, which are drawn again). `SearchLoop` drives it from Ray
Tune through the thin adapter in `searcher.py`: it hands proposals to Tune, records epochs and
final results (a trial the scheduler stopped early is PRUNED, never a COMPLETE point with a
truncated accuracy; failures are FAIL with their reason), and refreshes the tables, the live
dashboard and the status line after every change. All state is in study.db, so a resumed
search rebuilds the loop from the study alone.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from cspnas import run_format
from cspnas.cost.onnx_runtime import QuantizationError
from cspnas.objectives import OBJECTIVES, told_values
from cspnas.run_format import FINAL_STATES, TRAINED_STATES, full_fidelity
from cspnas.search.costs import CostMeter
from cspnas.search.faults import cost_fault, crash_point
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


def interrupt(study: optuna.Study, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Close a trial the search stopped mid-training as 'interrupted': it uses no budget, and the
    next resume re-queues its architecture once (`interrupted_to_failed`)."""
    again = "requeued_from" not in attrs  # a re-queued trial interrupted again is not re-queued forever
    trial.set_user_attr("status", "interrupted")
    trial.set_user_attr("failure_reason", "interrupted: the search stopped mid-trial; " +
                        ("re-queued on resume" if again else "interrupted twice, not re-queued again"))
    study.tell(trial, state=TrialState.FAIL)


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
    ones in a row, end a search that cannot find feasible ones (`given_up` says why)."""

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
        self.told: list[int] = []  # trials told since the caller last cleared it
        self.exhausted = False  # RESAMPLE_LIMIT draws in a row repeated tried architectures
        self._tried: dict[str, int] | None = None  # arch hash -> trial, of finished and running trials

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
            cost = self.meter.measure(arch)
        except QuantizationError as e:  # this candidate cannot ship as int8: it fails, the search goes on
            for key, value in (("arch", arch.to_json(indent=None)), ("arch_hash", arch.arch_hash()),
                               ("arch_summary", arch.summary()), ("epochs", s.train.epochs), ("epochs_done", 0)):
                trial.set_user_attr(key, value)
            self.tell(trial, "failed", reason=str(e))
            return None
        values, violations = s.constraints.check(cost)
        for key, value in values.items():
            trial.set_constraint(key, value)
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
        return Candidate(trial, attrs["arch"])

    def tell(self, trial: optuna.Trial, status: str, *, accuracy: float | None = None,
             reason: str | None = None) -> None:
        """Record the outcome on the trial, then tell Optuna (constraints were set before)."""
        trial.set_user_attr("status", status)
        if reason:
            trial.set_user_attr("failure_reason", reason)
        if status in ("complete", "infeasible"):
            trial.set_user_attr("accuracy", float(accuracy))
            self.study.tell(trial, told_values(self.settings.objectives, trial.user_attrs), state=TrialState.COMPLETE)
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        self.told.append(trial.number)
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
        self.trials = self.front = None
        self.hypervolume = 0.0
        self._last_tables = self._last_dashboard = 0.0
        self.stop: StopRequest | None = None  # Ctrl-C / SIGTERM; set by the caller around run()
        self.disk_full: str | None = None  # why the disk-full stop happened
        self.on_trial_start: Callable[[], None] = lambda: None  # e.g. record the Ray processes now running

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
            self.refresh()
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
                try:
                    with self.stop.forcible() if self.stop is not None else contextlib.nullcontext():
                        tuner.fit()
                except Exception as e:
                    if not is_disk_full(e):
                        raise
                    self.disk_full = _first_line(e)
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
        self.refresh()
        before = len(self.front)
        for _ in range(CONFIRM_ROUNDS):
            todo = [int(t) for t, done in zip(self.front["trial"], self.front["confirmed"]) if not done]
            if not todo:
                break
            arch = dict(zip(self.trials["trial"], self.trials["arch_json"]))
            found = self.proposer.meter.confirm([arch[t] for t in todo], CONFIRM_PASSES)
            run_format.record_confirmed(self.study, dict(zip(todo, found)))
            self.refresh()
            self.progress.log(f"confirmation: re-timed {len(todo)} front member(s) in {CONFIRM_PASSES} "
                              f"interleaved passes; front {before} -> {len(self.front)}, "
                              f"{int(self.front['marginal'].sum())} marginal")

    def _interrupt_running(self) -> None:
        """Trials Tune stopped because the search was asked to stop: interrupted, re-queued once."""
        for key, trial in list(self.running.items()):
            try:
                interrupt(self.study, trial, trial.user_attrs)
            except Exception as e:  # a full disk: left RUNNING, the next resume closes it the same way
                if not is_disk_full(e):
                    raise
            del self.running[key]
            self._training.pop(key, None)

    def finish(self) -> None:
        crash_point("finishing")
        if self.stopping:  # rewrite the live dashboard now: with no trial running it stops reloading itself
            self._last_dashboard = 0.0
        self.refresh()

    # -- what the Ray adapter forwards ------------------------------------------------------------
    def start(self, key: str) -> dict[str, Any] | None:
        """The Ray config of the next trial to train, or None when the budget is spent (or the
        search was asked to stop)."""
        if self.stopping:
            return None
        candidate = self.proposer.propose()
        if self.proposer.told:
            self.refresh()
        if candidate is None:
            return None
        self.running[key] = candidate.trial
        self._training[key] = (time.monotonic(), 0, 0.0)
        self.on_trial_start()
        self.refresh(started=True)
        crash_point("trial_started")
        return {"trial": candidate.trial.number, "arch": candidate.arch_json, **self.trial_spec}

    def on_result(self, key: str, result: dict[str, Any]) -> None:
        trial = self.running.get(key)
        if trial is None:
            return
        trial.set_user_attr("val_acc_per_epoch", list(result.get("val_acc_per_epoch", [])))
        trial.set_user_attr("epochs_done", int(result.get("epoch", 0)))
        started = self._training.get(key, (time.monotonic(), 0, 0.0))[0]
        self._training[key] = (started, int(result.get("epoch", 0)), float(result.get("train_seconds", 0.0)))
        self.progress.update(self.status())  # the epoch moves the status line; the tables wait for the tell

    def on_complete(self, key: str, result: dict[str, Any] | None, error: bool) -> None:
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
            interrupt(self.study, trial, trial.user_attrs)
        elif self.stopping and not (status == "complete" and full_fidelity(epochs_done, self.settings.train.epochs)):
            interrupt(self.study, trial, trial.user_attrs)  # its worker saw the Ctrl-C too
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
            tell(trial, "pruned", reason=f"stopped by the scheduler after {epochs_done} epoch(s)")
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
    def refresh(self, started: bool = False) -> None:
        """Rewrite the tables from the study (a start alone only moves the status line, at most
        every 2 s), prune weights off the front, keep the live dashboard current."""
        self.proposer.told.clear()
        if not (started and self.trials is not None and time.monotonic() - self._last_tables < 2.0):
            self._last_tables = time.monotonic()
            try:
                self._write_tables()
            except Exception as e:  # called from Ray's callbacks: a full disk stops the search, not Ray
                if not is_disk_full(e):
                    raise
                self.disk_full = self.disk_full or _first_line(e)  # study.db has it all; resume rewrites the tables
                return
            if self.dashboard:
                self._refresh_dashboard()
        self.progress.update(self.status())

    def _write_tables(self) -> None:
        """trials.csv and pareto.csv from the study (pruning weights off the front first)."""
        while True:
            trials = run_format.trials_frame(self.study, self.config, self.run_dir)
            front, hv = run_format.pareto_frame(trials, self.config)
            if not _prune_weights(self.run_dir, trials, front, self.settings.keep_weights):
                break
        run_format.write_csv_atomic(trials, self.run_dir / run_format.TRIALS)
        crash_point("between_tables")
        run_format.write_csv_atomic(front, self.run_dir / run_format.PARETO)
        self.trials, self.front, self.hypervolume = trials, front, hv

    def _refresh_dashboard(self, every_s: float = 15.0) -> None:
        """Keep RUN/dashboard.html current while searching (cheap version: no importance fit)."""
        if not len(self.trials) or time.monotonic() - self._last_dashboard < every_s:
            return
        self._last_dashboard = time.monotonic()
        from cspnas.results.dashboard import write_dashboard

        try:
            write_dashboard(self.run_dir, importance=False)
        except Exception as e:  # a plotting problem must never stop a search
            log.warning("dashboard refresh failed: %s", e)

    def status(self) -> Status:
        trials, now = self.trials, time.monotonic()
        states = trials["state"].value_counts().to_dict() if len(trials) else {}
        complete = trials[trials["state"] == "complete"]["accuracy"].dropna() if len(trials) else []
        done = sum(states.get(k, 0) for k in TRAINED_STATES)
        running = tuple(Running(self.running[k].number, epochs, now - started)
                        for k, (started, epochs, _) in self._training.items() if k in self.running)
        # training seconds per epoch: trials that trained (twins copy theirs), then the running ones
        trained = trials[trials["state"].isin(FINAL_STATES) & (trials["epochs_done"] > 0)
                         & trials["duplicate_of"].isna()] if len(trials) else trials
        seconds = float(trained["train_seconds"].fillna(0).sum()) if len(trials) else 0.0
        epochs = int(trained["epochs_done"].sum()) if len(trials) else 0
        for _, e, s in self._training.values():
            seconds, epochs = seconds + s, epochs + e
        untrained = int(trials[trials["state"].isin(TRAINED_STATES)]["duplicate_of"].notna().sum()) if len(trials) else 0
        return Status(done=done, budget=self.settings.budget, running=running,
                      infeasible=states.get("infeasible", 0), failed=states.get("failed", 0),
                      pruned=states.get("pruned", 0), best_accuracy=float(max(complete)) if len(complete) else None,
                      front_size=len(self.front), hypervolume=self.hypervolume, elapsed_s=now - self.t0,
                      epochs=self.settings.train.epochs, epoch_seconds=seconds / epochs if epochs else None,
                      trained_share=(done - untrained) / done if done else 1.0,
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


def _prune_weights(run_dir: Path, trials, front, keep: str) -> bool:
    """Keep weights of front members only (unless --keep-weights all), so disks don't fill up."""
    if keep == "all" or trials is None or not len(trials):
        return False
    keep_paths = set(front["weights"].dropna()) if keep == "front" and len(front) else set()
    finished = trials[trials["state"].isin(["complete", "pruned", "failed"])]
    pruned = False
    for rel in set(finished["weights"].dropna()) - keep_paths - {""}:
        (run_dir / rel).unlink(missing_ok=True)
        pruned = True
    return pruned


def _first_line(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:  # the root cause says what filled up
        e = e.__cause__ or e.__context__
    return (str(e).splitlines() or [type(e).__name__])[0]
