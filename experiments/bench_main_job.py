"""Wall time of the README's main job: `cspnas search --budget 200 --target-latency 10ms`.

Runs the real CLI (digits, defaults) into a temporary results directory, then summarizes the
run: wall time, trial states, front size, and whether any front point breaks the target.

    python experiments/bench_main_job.py                 # results/benchmarks/main_job.json
    python experiments/bench_main_job.py --budget 6 --smoke
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--target-latency", default="10ms")
    ap.add_argument("--smoke", action="store_true", help="tiny run (1 epoch) for the tests")
    ap.add_argument("--out", default="results/benchmarks/main_job.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cspnas-main-"))
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(args.budget),
           "--target-latency", args.target_latency, "--results-dir", str(tmp), "--name", "main", "--no-dashboard"]
    if args.smoke:
        cmd += ["--epochs", "1"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"search failed ({proc.returncode}): {proc.stderr[-2000:]}")
    run = tmp / "main"
    trials, front = pd.read_csv(run / "trials.csv"), pd.read_csv(run / "pareto.csv")
    config = yaml.safe_load((run / "config.yaml").read_text())
    target = config["settings"]["constraints"]["max_latency_ms"]
    report = {
        "command": "cspnas search --budget %d --target-latency %s%s" % (args.budget, args.target_latency,
                                                                     " --epochs 1" if args.smoke else ""),
        "wall_s": wall, "trials": len(trials), "states": trials["state"].value_counts().to_dict(),
        "front_size": len(front), "best_accuracy": float(front["accuracy"].max()) if len(front) else None,
        "front_max_latency_ms": float(front["latency_ms"].max()) if len(front) else None,
        "target_latency_ms": target,
        "front_respects_target": bool((front["latency_ms"] <= target).all()),
        "hypervolume": float(trials["hypervolume"].max()) if len(front) else 0.0,
        "epochs": config["settings"]["train"]["epochs"], "concurrency": config["settings"]["concurrency"],
        "median_train_s": float(trials["train_seconds"].median()),
        # where the wall time goes: training (summed over trials; concurrency runs them side by side), the
        # driver's cost of a candidate (build, MACs, latency, zero-cost scores), the driver's busy/idle shares
        "train_s_total": round(float(trials["train_seconds"].sum()), 1),
        "cost_s_total": round(float(trials["cost_seconds"].sum()), 1),
        "median_cost_s": float(trials["cost_seconds"].median()),
        "candidates_costed": int(trials["cost_seconds"].notna().sum()),
        "latency_backend": config.get("latency", {}).get("backend"),
        "driver": config.get("driver"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "gpu": False},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("wall_s", "states", "front_size", "front_respects_target", "train_s_total",
                                             "cost_s_total", "driver")}))
    print(f"run kept in {run}")


if __name__ == "__main__":
    main()
