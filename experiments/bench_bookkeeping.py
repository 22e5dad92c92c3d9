"""The search driver's per-trial bookkeeping (trials.csv, pareto.csv, weights pruning) as the study grows.

Old way: after every trial, re-read the whole study and rewrite both tables (what the loop did before
the live tables; today `LiveTables.rebuild`, run once at start, resume and finish). New way: what the
loop does per trial now (`LiveTables.update`): read the started trial by id and append its row, then
append its told row and update the front from the current front and the new point alone.

The study is synthetic but stored for real: the run's own Optuna SQLite storage (WAL), real
architectures sampled from the default search space, synthetic costs and accuracies (no training;
10% infeasible, 5% pruned, 3% failed), a weights file per complete trial, kept only for the front
(--keep-weights front). It grows to each size; there the old way is timed warm (same study object,
median of 3) and cold (a freshly opened storage), and the new way over the next trials, each run
through ask / set attributes / tell as the loop does (only the bookkeeping is timed).

    python experiments/bench_bookkeeping.py          # 200 / 3,000 / 10,000 trials -> results/benchmarks/bookkeeping.json
    python experiments/bench_bookkeeping.py --smoke  # 20 / 60 trials (the tests)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, write_json

import numpy as np
import optuna

from cspnas import run_format
from cspnas.objectives import DEFAULT_OBJECTIVES, told_values
from cspnas.search.loop import _frozen
from cspnas.space.searchspace import load_space

KEEP = "front"


class SyntheticStudy:
    """A run directory whose study grows by synthetic trials (see the module docstring)."""

    def __init__(self, root: Path, seed: int = 0, pool: int = 300):
        self.rng = random.Random(seed)
        self.space = load_space("default")
        self.config = run_format.new_config(
            settings={"objectives": list(DEFAULT_OBJECTIVES), "keep_weights": KEEP}, space_yaml="",
            space_name="default", data={}, num_classes=10, in_chs=3, input_size=32, train_device="cpu",
            latency={}, references={"macs": 2e9, "latency": 50.0})
        self.run = root / "run"
        run_format.create_run_dir(self.run, self.config)
        (self.run / run_format.WEIGHTS).mkdir()
        self.study = self.open()
        # growth reuses a pool of sampled architectures (sampling one costs more than the bookkeeping)
        draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        self.pool = []
        for _ in range(pool):
            trial = draws.ask()
            self.pool.append((trial.params, trial.distributions, self.space.sample(trial, in_chs=3, num_classes=10)))
            draws.tell(trial, 0.0)

    def open(self) -> optuna.Study:
        """The study through a freshly opened storage (nothing cached)."""
        storage = run_format.open_storage(self.run / run_format.STUDY)
        return run_format.open_study(storage, DEFAULT_OBJECTIVES, optuna.samplers.RandomSampler(seed=0))

    def _draw(self, arch) -> tuple[dict, dict]:
        """A trial's attributes when it starts training and when it is told: synthetic costs and outcome."""
        rng = self.rng
        macs = 10 ** rng.uniform(5, 8.5)
        latency = macs / 2e7 * 10 ** rng.uniform(-0.15, 0.15) + 0.3
        state = rng.choices(["complete", "infeasible", "pruned", "failed"], [82, 10, 5, 3])[0]
        acc = min(0.99, 0.2 + 0.1 * math.log10(macs / 1e4) + rng.uniform(-0.08, 0.08))
        running = {"arch": arch.to_json(indent=None), "arch_hash": arch.arch_hash(), "arch_summary": arch.summary(),
                   "params": int(macs / 40), "macs": int(macs), "latency_ms": latency, "latency_iqr_ms": 0.02 * latency,
                   "latency_runs": 50, "latency_noisy": False, "latency_backend": "torch",
                   "memory_bytes": int(macs / 100), "cost_seconds": 0.2, "cost_wait_seconds": 0.01,
                   "feasible": state != "infeasible", "violations": [] if state != "infeasible" else ["latency"],
                   "epochs": 5, "epochs_done": 0, "status": "running"}
        done = {"complete": 5, "pruned": 2, "failed": 1, "infeasible": 0}[state]
        final = {"status": state, "epochs_done": done, "val_acc_per_epoch": [round(acc * (k + 1) / 5, 4)
                                                                              for k in range(done)],
                 "train_seconds": 2.0 * done, "accuracy": round(acc, 4) if state == "complete" else 0.0}
        if state == "failed":
            final["failure_reason"] = "RuntimeError: synthetic failure"
        return running, final

    def _weights(self, number: int, final: dict) -> None:
        if final["status"] == "complete":  # as a worker writes them, before the tell
            final["weights"] = run_format.weights_path(number)
            (self.run / final["weights"]).write_bytes(b"\0" * 64)

    def grow(self, n: int) -> None:
        """Add trials until the study has `n`. Growth is not timed, and Optuna's ORM writes ~50 rows per
        trial one by one (minutes per 1,000 here), so the rows go in by plain SQL, in Optuna's own schema
        and encoding; every read, and every timed trial, goes through Optuna."""
        first = len(self.study.trials)
        con = sqlite3.connect(self.run / run_format.STUDY)
        (study_id,) = con.execute("SELECT study_id FROM studies").fetchone()
        (next_id,) = con.execute("SELECT COALESCE(MAX(trial_id), 0) + 1 FROM trials").fetchone()
        trials, params, values, attrs = [], [], [], []
        now = dt.datetime.now()
        for k, number in enumerate(range(first, n)):
            trial_id = next_id + k
            knobs, distributions, arch = self.pool[number % len(self.pool)]
            running, final = self._draw(arch)
            self._weights(number, final)
            user = {**running, **final}
            state = {"complete": "COMPLETE", "infeasible": "COMPLETE", "pruned": "PRUNED"}.get(final["status"], "FAIL")
            start = now + dt.timedelta(seconds=number)
            trials.append((trial_id, number, study_id, state, str(start), str(start + dt.timedelta(seconds=0.5))))
            for name, dist in distributions.items():
                params.append((trial_id, name, dist.to_internal_repr(knobs[name]),
                               optuna.distributions.distribution_to_json(dist)))
            if state == "COMPLETE":
                values += [(trial_id, i, v, "FINITE") for i, v in enumerate(told_values(DEFAULT_OBJECTIVES, user))]
            attrs += [(trial_id, key, json.dumps(v)) for key, v in user.items()]
        with con:
            con.executemany("INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete) "
                            "VALUES (?, ?, ?, ?, ?, ?)", trials)
            con.executemany("INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) "
                            "VALUES (?, ?, ?, ?)", params)
            con.executemany("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)",
                            values)
            con.executemany('INSERT INTO trial_user_attributes (trial_id, "key", value_json) VALUES (?, ?, ?)', attrs)
        con.close()
        self.study = self.open()
        assert len(self.study.trials) == n  # Optuna reads what was written

    def loop_trial(self, tables: run_format.LiveTables) -> float:
        """One trial as the loop runs it; returns the seconds of bookkeeping it cost."""
        trial = self.study.ask()
        running, final = self._draw(self.space.sample(trial, in_chs=3, num_classes=10))
        for k, v in running.items():
            trial.set_user_attr(k, v)
        t0 = time.perf_counter()
        tables.update(_frozen(trial))  # the started trial's row
        spent = time.perf_counter() - t0
        self._weights(trial.number, final)
        for k, v in final.items():
            trial.set_user_attr(k, v)
        state = final["status"]
        if state in ("complete", "infeasible"):
            told = self.study.tell(trial, told_values(DEFAULT_OBJECTIVES, trial.user_attrs))
        else:
            told = self.study.tell(trial, state=optuna.trial.TrialState.PRUNED if state == "pruned"
                                   else optuna.trial.TrialState.FAIL)
        t0 = time.perf_counter()
        tables.update(told)  # its final row, the front
        return spent + time.perf_counter() - t0


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(s: SyntheticStudy, size: int, new_trials: int, old_repeats: int) -> dict:
    s.grow(size)
    tables = run_format.LiveTables(s.run, s.config, KEEP)
    warm = [timed(lambda: tables.rebuild(s.study)) for _ in range(old_repeats)]
    cold = timed(lambda: tables.rebuild(s.open()))
    front_before = set(tables.front["trial"])
    per_trial = sorted(s.loop_trial(tables) for _ in range(new_trials))
    return {"trials": size, "old_warm_s": statistics.median(warm), "old_cold_s": cold,
            "new_per_trial_s": {"median": statistics.median(per_trial), "mean": statistics.fmean(per_trial),
                                "p90": float(np.percentile(per_trial, 90)), "max": per_trial[-1]},
            "new_trials_timed": new_trials, "front_size": len(tables.front),
            "front_joins": len(set(tables.front["trial"]) - front_before)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200,3000,10000", help="study sizes to measure at (trials)")
    ap.add_argument("--new-trials", type=int, default=50, help="trials timed the new way at each size")
    ap.add_argument("--smoke", action="store_true", help="sizes 20 and 60, 5 trials each")
    ap.add_argument("--out", default="results/benchmarks/bookkeeping.json")
    args = ap.parse_args()
    sizes = [20, 60] if args.smoke else [int(x) for x in args.sizes.split(",")]
    new_trials = 5 if args.smoke else args.new_trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cspnas-bookkeeping-") as tmp:
        s = SyntheticStudy(Path(tmp))
        rows = []
        for size in sizes:
            rows.append(measure(s, size, new_trials, 1 if args.smoke else 3))
            r = rows[-1]
            print(f"{size:>6} trials: old {r['old_warm_s'] * 1e3:8.1f} ms warm, {r['old_cold_s'] * 1e3:8.1f} ms cold | "
                  f"new {r['new_per_trial_s']['median'] * 1e3:6.2f} ms median, {r['new_per_trial_s']['mean'] * 1e3:6.2f} "
                  f"mean, {r['new_per_trial_s']['max'] * 1e3:6.1f} max per trial (front {r['front_size']})", flush=True)
    largest = rows[-1]
    report = {"what": "driver seconds of per-trial bookkeeping (trials.csv, pareto.csv, weights) vs study size",
              "old": "every trial re-reads the study and rewrites both tables (LiveTables.rebuild)",
              "new": "LiveTables.update per trial change (started row + told row, front from itself)",
              "keep_weights": KEEP, "sizes": rows,
              "goal": {"new_mean_s_at_largest_max": 0.05,
                       "met": largest["new_per_trial_s"]["mean"] <= 0.05},
              "wall_s": round(time.monotonic() - started, 1), "machine": machine()}
    write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
