"""Framework overhead of `cspnas search`: Ray Tune + Optuna vs the compute the trials need.

One run, side by side:
  A. `run_search` (real Ray Tune, Optuna SQLite study, concurrency C) on the digits data;
  B. a bare, sequential Optuna ask/tell loop in this process that costs and trains the
     SAME architectures (enqueued from A's study) with the same settings.
Per-trial overhead of A = (wall_A - sum(trial compute) / C) / trials, where trial compute
is cost measurement + training as timed inside the trials; the same for B with C = 1.
Ray start-up is timed separately (a one-off per search, not per trial).
A second search with a tight latency limit measures what an infeasible candidate costs.

    python experiments/bench_search_overhead.py          # results/benchmarks/search_overhead.json
    python experiments/bench_search_overhead.py --smoke  # tiny (used by the tests)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import torch

from cspnas.cost import LatencySettings
from cspnas.data import load_dataset
from cspnas.models import build_model
from cspnas.search.costs import CostMeter
from cspnas.search.gate import MeasureGate
from cspnas.search.ray_session import start_ray as _start_ray
from cspnas.search.runner import run_search
from cspnas.search.settings import Constraints, SearchSettings, search_training
from cspnas.space import ArchConfig
from cspnas.train import TrainConfig, train


def search_side(tmp: Path, budget: int, epochs: int, concurrency: int) -> dict:
    s = SearchSettings(name="overhead", results_dir=str(tmp), budget=budget,
                       train=search_training(epochs=epochs), concurrency=concurrency, device="cpu", sampler="random",
                       keep_weights="none")
    t0 = time.perf_counter()
    _start_ray(s)
    ray_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run_search(s, live=False)
    wall = time.perf_counter() - t0
    trials = out.trials
    train_s = float(trials["train_seconds"].fillna(0).sum())
    cost_s = float(trials["cost_seconds"].fillna(0).sum())
    compute = train_s + cost_s
    # Cost measurement runs in the driver with every trainer paused (honest latency), so it
    # is serial by design; the second figure charges it as such and isolates Ray + Optuna.
    return {"ray_start_s": ray_start, "wall_s": wall, "trials": len(trials), "trial_compute_s": compute,
            "train_s": train_s, "cost_s": cost_s, "ideal_s": compute / concurrency,
            "overhead_per_trial_s": (wall - compute / concurrency) / len(trials),
            "overhead_per_trial_excl_serial_cost_s": (wall - train_s / concurrency - cost_s) / len(trials),
            "run_dir": out.run_dir,
            "states": trials["state"].value_counts().to_dict()}


def bare_side(run_dir: Path, epochs: int) -> dict:
    """Sequential ask/tell over the same architectures, no Ray, in-memory Optuna."""
    trials = pd.read_csv(run_dir / "trials.csv").sort_values("trial")
    archs = [ArchConfig.from_json(a) for a in trials["arch_json"]]
    data = load_dataset("digits")
    space_meter = CostMeter(LatencySettings(in_chs=data.in_chs, input_size=data.input_size, min_run_time_s=0.1),
                            MeasureGate(Path(tempfile.mkdtemp())), data.input_size)
    cfg = TrainConfig(epochs=epochs, device="cpu")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    compute = 0.0
    t0 = time.perf_counter()
    for arch in archs:
        trial = study.ask()
        c0 = time.perf_counter()
        cost = space_meter.measure(arch)
        torch.manual_seed(cfg.seed)
        result = train(build_model(arch), data, cfg)
        compute += time.perf_counter() - c0
        study.tell(trial, [result.final_val_acc, cost["macs"], cost["latency_ms"]])
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "trials": len(archs), "trial_compute_s": compute,
            "overhead_per_trial_s": (wall - compute) / len(archs)}


def infeasible_side(tmp: Path, budget: int) -> dict:
    # infeasible candidates use no budget: the screen limit ends this search after `budget` of them
    s = SearchSettings(name="infeasible", results_dir=str(tmp), budget=budget, screen_limit=budget,
                       train=search_training(epochs=1), concurrency=2, device="cpu", sampler="random",
                       constraints=Constraints(max_latency_ms=0.001))
    t0 = time.perf_counter()
    out = run_search(s, live=False, preflight=False)  # all-infeasible on purpose
    wall = time.perf_counter() - t0
    t = out.trials
    per = (pd.to_datetime(t["completed_at"]) - pd.to_datetime(t["started_at"])).dt.total_seconds()
    trained = int((t["train_seconds"].fillna(0) > 0).sum())
    return {"trials": len(t), "infeasible": int((t["state"] == "infeasible").sum()), "trained": trained,
            "wall_s": wall, "wall_per_candidate_s": wall / len(t),
            "ask_to_tell_median_s": float(per.median()), "ask_to_tell_max_s": float(per.max()),
            "cost_seconds_median": float(t["cost_seconds"].median())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/search_overhead.json")
    args = ap.parse_args()
    budget = 3 if args.smoke else args.budget
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="cspnas-overhead-"))
    try:
        a = search_side(tmp, budget, args.epochs, args.concurrency)
        b = bare_side(a.pop("run_dir"), args.epochs)
        c = infeasible_side(tmp, 4 if args.smoke else 20)
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "settings": {"dataset": "digits", "budget": budget, "epochs": args.epochs,
                     "concurrency": args.concurrency, "sampler": "random", "space": "default"},
        "search": a, "bare_optuna_loop": b, "infeasible": c,
        "speedup_vs_bare": b["wall_s"] / a["wall_s"],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"search: {a['trials']} trials in {a['wall_s']:.1f} s (+{a['ray_start_s']:.1f} s Ray start); "
          f"compute {a['trial_compute_s']:.1f} s / {args.concurrency} = {a['ideal_s']:.1f} s; "
          f"overhead {a['overhead_per_trial_s']:.3f} s/trial "
          f"({a['overhead_per_trial_excl_serial_cost_s']:.3f} s/trial counting the paused-for-latency cost as serial)")
    print(f"bare ask/tell: {b['wall_s']:.1f} s, overhead {b['overhead_per_trial_s']:.3f} s/trial; "
          f"search speedup x{report['speedup_vs_bare']:.2f}")
    print(f"infeasible: {c['infeasible']}/{c['trials']} infeasible, {c['trained']} trained, "
          f"{c['wall_per_candidate_s']:.3f} s per candidate (ask->tell median {c['ask_to_tell_median_s']:.3f} s)")


if __name__ == "__main__":
    main()
