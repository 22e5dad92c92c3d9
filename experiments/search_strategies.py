"""Search strategies: hypervolume vs trials for random search, TPE and NSGA-II.

Runs the real CLI (`cspnas search --sampler S --seed K ...`) for every sampler and seed, with
both hard limits set (``--max-macs`` and ``--target-latency``) so that every run uses the same
hypervolume references (cspnas takes the limits as references). Seeds are paired: seed K gives
every sampler the same data split and training seed, so differences come from the sampler.
Hypervolume is recomputed from each run's trials.csv in trial (sampling) order with
cspnas.pareto.hypervolume_curve; an infeasible or failed trial adds nothing but counts
as a trial. Reports the final hypervolume per sampler (mean, std over seeds) and the trials each
sampler needs to reach random search's final hypervolume (same seed, and random's seed mean).

Runs are kept under .cache/experiments/search_strategies/ and resumed (`cspnas search --resume`)
or skipped when this script is re-run, so an interrupted experiment continues where it stopped.

    python experiments/search_strategies.py              # results/benchmarks/search_strategies.json
    python experiments/search_strategies.py --smoke --out /tmp/s.json
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from common import CACHE, REPO, machine, small_cifar10, write_json

from cspnas.objectives import DEFAULT_OBJECTIVES, bind, run_references
from cspnas.pareto import hypervolume_curve
from cspnas.units import parse_count, parse_duration_ms

SAMPLERS = ("random", "tpe", "nsga2")


def run_one(run_dir: Path, sampler: str, seed: int, data_args: list[str], args) -> float:
    """Run (or finish) one search; returns the wall seconds this call spent."""
    trials_csv = run_dir / "trials.csv"
    if trials_csv.is_file():
        done = pd.read_csv(trials_csv)
        if len(done) >= args.budget and not done["state"].isin(["running"]).any():
            return 0.0
    if (run_dir / "study.db").is_file():
        cmd = ["search", "--resume", str(run_dir)]
    else:
        cmd = ["search", "--budget", str(args.budget), "--sampler", sampler, "--seed", str(seed),
               "--epochs", str(args.epochs), "--max-macs", args.max_macs, "--target-latency", args.target_latency,
               "--concurrency", str(args.concurrency), "--keep-weights", "none", "--no-dashboard",
               "--results-dir", str(run_dir.parent), "--name", run_dir.name, *data_args]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cspnas.cli", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def curve_of(run_dir: Path, objectives) -> tuple[list[float], dict]:
    trials = pd.read_csv(run_dir / "trials.csv")
    curve = hypervolume_curve(trials, objectives, order_column="trial")
    return [round(float(v), 5) for v in curve], trials["state"].value_counts().to_dict()


def trials_to_reach(curve: list[float], level: float) -> int | None:
    """1-based trial count at which ``curve`` first reaches ``level`` (None: never)."""
    return next((k + 1 for k, v in enumerate(curve) if v >= level - 1e-12), None)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--max-macs", default="20M")
    ap.add_argument("--target-latency", default="2ms")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=CACHE / "experiments" / "search_strategies")
    ap.add_argument("--smoke", action="store_true", help="digits, budget 3, 1 epoch, 1 seed")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "search_strategies.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.budget, args.seeds, args.epochs, args.train_subset = 3, 1, 1, None
        data_args, data_note = ["--dataset", "digits"], "digits (bundled), smoke"
        if args.work_dir == ap.get_default("work_dir"):
            args.work_dir = args.out.parent / (args.out.stem + "-runs")
    else:
        folder = small_cifar10()
        data_args = ["--dataset", "folder", "--data-dir", str(folder), "--train-subset", str(args.train_subset)]
        data_note = f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py"
    refs = {"macs": float(parse_count(args.max_macs)), "latency": parse_duration_ms(args.target_latency)}
    objectives = bind(DEFAULT_OBJECTIVES, refs)

    runs, wall = [], 0.0
    for seed in range(args.seeds):
        for sampler in SAMPLERS:  # interleaved, so drift in machine load hits every sampler alike
            run_dir = args.work_dir / f"{sampler}-seed{seed}"
            seconds = run_one(run_dir, sampler, seed, data_args, args)
            wall += seconds
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert {k: run_references(config)[k] for k in refs} == refs, \
                f"{run_dir}: references differ from this experiment's"
            curve, states = curve_of(run_dir, objectives)
            runs.append({"sampler": sampler, "seed": seed, "final_hv": curve[-1], "states": states, "curve": curve,
                         "wall_s": round(seconds, 1) if seconds else None})
            print(f"{sampler:6s} seed {seed}: hypervolume {curve[-1]:.4f} after {len(curve)} trials {states}",
                  flush=True)

    random_final = {r["seed"]: r["final_hv"] for r in runs if r["sampler"] == "random"}
    random_mean = statistics.mean(random_final.values())
    summary = {}
    for sampler in SAMPLERS:
        mine = [r for r in runs if r["sampler"] == sampler]
        finals = [r["final_hv"] for r in mine]
        mean_curve = [round(statistics.mean(c), 5) for c in zip(*(r["curve"] for r in mine))]
        summary[sampler] = {
            "final_hv_mean": statistics.mean(finals),
            "final_hv_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "final_hv_per_seed": finals,
            # paired: trials this sampler needs to reach random's final hypervolume on the same seed
            "trials_to_random_final_per_seed": [trials_to_reach(r["curve"], random_final[r["seed"]]) for r in mine],
            "trials_to_random_mean_final_on_mean_curve": trials_to_reach(mean_curve, random_mean),
            "feasible_fraction": statistics.mean(
                1 - r["states"].get("infeasible", 0) / sum(r["states"].values()) for r in mine),
            "mean_curve": mean_curve,
        }
    report = {"experiment": "search_strategies",
              "settings": {"budget": args.budget, "seeds": args.seeds, "epochs": args.epochs,
                           "train_subset": args.train_subset, "max_macs": args.max_macs,
                           "target_latency": args.target_latency, "concurrency": args.concurrency,
                           "space": "default", "data": data_note,
                           "samplers": "cspnas defaults: TPE multivariate, constant liar, 10 startup trials; "
                                       "NSGA-II population 20; random"},
              "summary": summary, "runs": runs, "wall_s_this_call": round(wall, 1), "machine": machine()}
    write_json(args.out, report)
    for sampler, s in summary.items():
        print(f"{sampler:6s} final HV {s['final_hv_mean']:.4f} +- {s['final_hv_std']:.4f}; trials to random's "
              f"final (per seed): {s['trials_to_random_final_per_seed']}")
    return report


if __name__ == "__main__":
    main()
