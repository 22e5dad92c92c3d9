"""Multi-fidelity: hypervolume against training compute for fixed-epoch TPE, ASHA and `--scheduler pareto`.

Issue 14's goal: reach fixed-epoch TPE's final hypervolume with <= 50% of its compute. Every method
is a real `cspnas search` (TPE sampler) on the reduced CIFAR-10 of experiments/common.py, seeds 0-2
(paired: a seed fixes data split, sampler seed and training seed for every method), with both hard
limits set so every run has the same hypervolume references (cspnas takes the limits as references):

  * ``fixed``: every candidate trains ``--epochs`` epochs, ``--budget`` candidates;
  * ``asha``: ``--scheduler asha`` (rungs at 1, 2, 4... epochs, keep the top half by accuracy);
  * ``pareto``: ``--scheduler pareto`` (a trial stops at a rung only when, with its exact costs, it is
    off that rung's front by more than ``--pareto-margin``; README "Multi-fidelity");
  * ``prefilter`` (HOOK, issue 14 item 3): fixed epochs plus ``--prefilter SCORE:F`` (zero-cost scores
    skip training for the bottom F); enabled by this script's ``--prefilter SCORE:F`` once the search
    has that setting (see METHODS).

The multi-fidelity methods get ``--mf-budget`` candidates (default twice ``--budget``): stopped trials
cost a fraction of a full one, so they may try more in the same compute. Compute is the summed
training seconds of every trained trial (complete, pruned, failed; ``train_seconds`` in trials.csv),
also given as summed epochs (noise-free). Hypervolume is recomputed from each run's trials.csv in
completion order (cspnas.pareto.hypervolume_curve; only complete, full-fidelity trials add to it), so
the curve is hypervolume after C seconds of training. Reported per method: final hypervolume (mean,
std over seeds), compute, and the share of fixed-epoch TPE's total compute (same seed) at which the
method first reached fixed-epoch TPE's final hypervolume, and whether that is <= 50% (the goal).

Runs are kept under .cache/experiments/multi_fidelity/ and resumed (`cspnas search --resume`) or
skipped when this script is re-run, so an interrupted experiment continues where it stopped.

    python experiments/multi_fidelity.py              # results/benchmarks/multi_fidelity.json (+ .svg)
    python experiments/multi_fidelity.py --smoke --out /tmp/m.json
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import yaml
from common import CACHE, REPO, machine, small_cifar10, write_json

from cspnas.objectives import DEFAULT_OBJECTIVES, bind, run_references
from cspnas.pareto import hypervolume_curve
from cspnas.units import parse_count, parse_duration_ms

# method -> SearchSettings overrides, and whether it gets the multi-fidelity budget
METHODS: dict[str, dict] = {
    "fixed": {"settings": {"scheduler": "none"}, "mf_budget": False},
    "asha": {"settings": {"scheduler": "asha"}, "mf_budget": True},
    "pareto": {"settings": {"scheduler": "pareto"}, "mf_budget": True},
    # HOOK (issue 14 item 3, another change): the zero-cost prefilter arm. `--prefilter SCORE:F` of this
    # script fills in {"prefilter": "SCORE:F"}; it runs only where SearchSettings has a `prefilter` field.
    "prefilter": {"settings": {"scheduler": "none", "prefilter": None}, "mf_budget": False},
}
BASELINE = "fixed"
GOAL_SHARE = 0.5  # issue 14: the baseline's final hypervolume with at most half its compute
TRAINED = ("complete", "pruned", "failed")


def method_settings(method: str, args) -> dict:
    """SearchSettings overrides of one method (its budget included)."""
    spec = METHODS[method]
    over = dict(spec["settings"])
    if "prefilter" in over:
        over["prefilter"] = args.prefilter
    if method == "pareto" and args.pareto_margin is not None:
        over["pareto_margin"] = args.pareto_margin
    over["budget"] = args.mf_budget if spec["mf_budget"] else args.budget
    return over


def run_one(run_dir: Path, method: str, seed: int, data: dict, args) -> float:
    """Run (or finish) one search in this process (Ray starts once for all); returns its wall seconds.
    No pre-flight: the limits are this experiment's (met by the default space, experiment 4)."""
    from cspnas.search.runner import run_search
    from cspnas.search.settings import Constraints, SearchSettings, search_training

    over = method_settings(method, args)
    trials_csv = run_dir / "trials.csv"
    if trials_csv.is_file():
        done = pd.read_csv(trials_csv)
        if done["state"].isin(TRAINED).sum() >= over["budget"] and not done["state"].eq("running").any():
            return 0.0
    t0 = time.perf_counter()
    if (run_dir / "study.db").is_file():
        run_search(resume=run_dir, live=False, dashboard=False)
    else:
        settings = SearchSettings(
            name=run_dir.name, results_dir=str(run_dir.parent), sampler="tpe", seed=seed,
            train=search_training(epochs=args.epochs), concurrency=args.concurrency, keep_weights="none",
            constraints=Constraints(max_macs=int(parse_count(args.max_macs)),
                                    max_latency_ms=parse_duration_ms(args.target_latency)),
            **data, **over)
        run_search(settings, live=False, dashboard=False, preflight=False)
    return time.perf_counter() - t0


def curve_of(run_dir: Path, objectives) -> dict:
    """Hypervolume after every trained trial (completion order) against cumulative training compute."""
    trials = pd.read_csv(run_dir / "trials.csv")
    trials = trials[trials["state"].isin(TRAINED)].sort_values("completed_at", kind="stable")
    hv = hypervolume_curve(trials, objectives, order_column="completed_at")  # already in that order
    seconds = trials["train_seconds"].fillna(0.0).cumsum()
    epochs = trials["epochs_done"].fillna(0).cumsum()
    return {"train_s": [round(float(v), 2) for v in seconds], "epochs": [int(v) for v in epochs],
            "hv": [round(float(v), 5) for v in hv]}


def share_to_reach(curve: dict, level: float, total: float, key: str = "train_s") -> float | None:
    """Compute (share of `total`) at which `curve` first reaches `level`; None: never."""
    return next((round(x / total, 4) for x, v in zip(curve[key], curve["hv"]) if v >= level - 1e-12), None)


def hv_at(curve: dict, share: float, total: float) -> float:
    """Hypervolume after `share` x `total` seconds of training (a step curve; 0 before the first trial)."""
    return max([v for x, v in zip(curve["train_s"], curve["hv"]) if x <= share * total + 1e-9], default=0.0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=30, help="candidates trained by fixed-epoch TPE")
    ap.add_argument("--mf-budget", type=int, default=None, help="candidates of ASHA and pareto (default 2x --budget)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="full training per candidate: the search's default "
                                                           "(rungs at 1, 2, 4)")
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--max-macs", default="20M")
    ap.add_argument("--target-latency", default="2ms")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--pareto-margin", type=float, default=None, help="default: the search's own default")
    ap.add_argument("--prefilter", default=None, metavar="SCORE:F",
                    help="add the zero-cost prefilter arm (needs a cspnas with `cspnas search --prefilter`)")
    ap.add_argument("--work-dir", type=Path, default=CACHE / "experiments" / "multi_fidelity")
    ap.add_argument("--smoke", action="store_true", help="digits (300 training images), budget 3 (multi-fidelity "
                                                         "4), 2 epochs, 1 seed, eager latency under 100ms")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "multi_fidelity.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.budget, args.mf_budget, args.seeds, args.epochs, args.train_subset = 3, 4, 1, 2, 300
        # eager latency with a short budget (the smoke checks the plumbing, not ONNX Runtime), so a looser
        # limit: eager is ~3x ONNX Runtime's time, more on a loaded host
        args.target_latency = "100ms"
        data = {"dataset": "digits", "train_subset": args.train_subset, "latency_backend": "torch",
                "latency_min_run_time_s": 0.02}
        data_note = "digits (bundled), smoke"
        if args.work_dir == ap.get_default("work_dir"):
            args.work_dir = args.out.parent / (args.out.stem + "-runs")
    else:
        folder = small_cifar10()
        data = {"dataset": "folder", "data_dir": str(folder), "train_subset": args.train_subset}
        data_note = f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py"
    args.mf_budget = args.mf_budget or 2 * args.budget
    methods = [m for m in METHODS if m != "prefilter" or args.prefilter]
    if args.prefilter:
        from cspnas.search.settings import SearchSettings

        if "prefilter" not in {f.name for f in fields(SearchSettings)}:
            raise SystemExit("--prefilter: this cspnas has no `cspnas search --prefilter` yet (issue 14 item 3)")
    refs = {"macs": float(parse_count(args.max_macs)), "latency": parse_duration_ms(args.target_latency)}
    objectives = bind(DEFAULT_OBJECTIVES, refs)

    from cspnas.errors import CspnasError

    runs, wall = [], 0.0
    try:
        for seed in range(args.seeds):
            for method in methods:  # interleaved, so drift in machine load hits every method alike
                run_dir = args.work_dir / f"{method}-seed{seed}"
                try:
                    seconds = run_one(run_dir, method, seed, data, args)
                except CspnasError as e:
                    raise SystemExit(f"{run_dir}: {e}") from None
                wall += seconds
                config = yaml.safe_load((run_dir / "config.yaml").read_text())
                assert {k: run_references(config)[k] for k in refs} == refs, \
                    f"{run_dir}: references differ from this experiment's"
                states = pd.read_csv(run_dir / "trials.csv")["state"].value_counts().to_dict()
                curve = curve_of(run_dir, objectives)
                final = curve["hv"][-1] if curve["hv"] else 0.0
                runs.append({"method": method, "seed": seed, "final_hv": final, "states": states,
                             "train_s": curve["train_s"][-1] if curve["train_s"] else 0.0,
                             "epochs": curve["epochs"][-1] if curve["epochs"] else 0, "curve": curve,
                             "settings": method_settings(method, args),
                             "wall_s": round(seconds, 1) if seconds else None})
                print(f"{method:9s} seed {seed}: hypervolume {final:.4f}, {runs[-1]['train_s']:.0f} s / "
                      f"{runs[-1]['epochs']} epochs of training {states}", flush=True)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    base = {r["seed"]: r for r in runs if r["method"] == BASELINE}
    summary = {}
    grid = [round(0.05 * k, 2) for k in range(0, 41)]  # 0 to 2x the baseline's compute
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        finals = [r["final_hv"] for r in mine]
        shares = [share_to_reach(r["curve"], base[r["seed"]]["final_hv"], base[r["seed"]]["train_s"]) for r in mine]
        epoch_shares = [share_to_reach(r["curve"], base[r["seed"]]["final_hv"], base[r["seed"]]["epochs"], "epochs")
                        for r in mine]
        summary[method] = {
            "final_hv_mean": statistics.mean(finals),
            "final_hv_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "final_hv_per_seed": finals,
            "train_s_per_seed": [r["train_s"] for r in mine],
            "epochs_per_seed": [r["epochs"] for r in mine],
            "pruned_per_seed": [r["states"].get("pruned", 0) for r in mine],
            # paired: compute (share of the baseline's, same seed) to reach the baseline's final hypervolume
            "share_to_baseline_final_per_seed": shares,
            "epoch_share_to_baseline_final_per_seed": epoch_shares,
            "goal_met": None if method == BASELINE else all(s is not None and s <= GOAL_SHARE for s in shares),
            "mean_curve_vs_baseline_compute": [
                [x, round(statistics.mean(hv_at(r["curve"], x, base[r["seed"]]["train_s"]) for r in mine), 5)]
                for x in grid],
        }
    report = {"experiment": "multi_fidelity",
              "settings": {"budget": args.budget, "mf_budget": args.mf_budget, "seeds": args.seeds,
                           "epochs": args.epochs, "train_subset": args.train_subset, "max_macs": args.max_macs,
                           "target_latency": args.target_latency, "concurrency": args.concurrency,
                           "pareto_margin": args.pareto_margin, "prefilter": args.prefilter,
                           "methods": {m: METHODS[m]["settings"] | {"mf_budget": METHODS[m]["mf_budget"]}
                                       for m in methods},
                           "space": "default", "sampler": "tpe", "data": data_note,
                           "goal": f"baseline ({BASELINE}) final hypervolume with <= {GOAL_SHARE:.0%} of its "
                                   "training seconds"},
              "summary": summary, "runs": runs, "wall_s_this_call": round(wall, 1), "machine": machine()}
    write_json(args.out, report)
    from plot_results import multi_fidelity

    multi_fidelity(report, args.out.with_suffix(".svg"))
    for method, s in summary.items():
        print(f"{method:9s} final HV {s['final_hv_mean']:.4f} +- {s['final_hv_std']:.4f}; compute share to "
              f"{BASELINE}'s final (per seed): {s['share_to_baseline_final_per_seed']}; goal met: {s['goal_met']}")
    return report


if __name__ == "__main__":
    main()
