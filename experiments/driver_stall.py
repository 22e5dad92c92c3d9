"""Driver stall: how long the search driver waits for the trainers to pause before it times a candidate.

The driver measures every candidate's latency with all training paused (the measurement gate);
trainers pause at their next batch boundary, training steps and evaluation batches alike. Issue 16
saw 9-28 s waits on CIFAR-10 at 32x32 while trainers finished a whole evaluation pass. This runs
a short real search there (`cspnas search`, concurrency 2, so a trainer is running whenever the
driver measures a new candidate) and reports, per candidate measured while another trial could be
training (trial number >= concurrency), the seconds waited (`cost_wait_seconds`): median and p90,
against the median time of one training step of the searched architectures (timed alone
afterwards: forward, backward and SGD step of a batch, the search's batch size, 1 thread; a
trainer sharing the machine is slower, so this is the strict yardstick). Goal: median wait <= one
training step. Also the driver's busy/idle share that the search recorded.

Data: CIFAR-10 reduced to 600 training / 100 test images per class at 32x32 (experiments/common.py).

    python experiments/driver_stall.py                  # results/benchmarks/driver_stall.json
    python experiments/driver_stall.py --source .cache/cifar10-jpeg   # an extracted cifar10-jpeg folder
    python experiments/driver_stall.py --smoke --out /tmp/stall.json  # digits, budget 4 (the tests)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from common import CACHE, REPO, machine, small_cifar10, write_json

from cspnas.models import build_model
from cspnas.space import ArchConfig


def step_seconds(arch_json: str, batch: int, size: int, steps: int = 4) -> float:
    """Median seconds of one training step of the architecture, alone on 1 thread."""
    model = build_model(ArchConfig.from_json(arch_json)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, model.arch.in_chs, size, size)
    y = torch.randint(0, model.arch.num_classes, (batch,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first step warms up


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--source", type=Path, default=None, help="an extracted cifar10-jpeg folder (default: .cache's)")
    ap.add_argument("--smoke", action="store_true", help="digits, budget 4")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "driver_stall.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.budget, size = 4, 8
        data_args, data_note = ["--dataset", "digits"], "digits (bundled), smoke"
    else:
        size = 32
        folder = small_cifar10(size=32, train_per_class=600, test_per_class=100, source=args.source)
        data_args = ["--dataset", "folder", "--data-dir", str(folder), "--train-subset", str(args.train_subset)]
        data_note = f"CIFAR-10 reduced: {folder.name} (32x32 PNG), see experiments/common.py"
    work = args.out.parent / (args.out.stem + "-run") if args.smoke else CACHE / "experiments" / "driver_stall"
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(args.budget), "--epochs", str(args.epochs),
           "--concurrency", str(args.concurrency), "--keep-weights", "none", "--no-dashboard",
           "--sampler", "random", "--results-dir", str(work.parent), "--name", work.name, *data_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    trials = pd.read_csv(work / "trials.csv")
    config = yaml.safe_load((work / "config.yaml").read_text())
    batch = int(config["settings"]["train"]["batch_size"])

    measured = trials[trials["cost_wait_seconds"].notna() & (trials["trial"] >= args.concurrency)]
    waits = sorted(measured["cost_wait_seconds"])
    trained = trials[(trials["state"].isin(["complete", "pruned"])) & trials["arch_json"].notna()]
    torch.set_num_threads(1)
    steps = [step_seconds(a, batch, size) for a in trained["arch_json"]]
    step = statistics.median(steps)
    median_wait = statistics.median(waits)
    report = {
        "experiment": "driver_stall",
        "settings": {"budget": args.budget, "epochs": args.epochs, "concurrency": args.concurrency,
                     "train_subset": None if args.smoke else args.train_subset, "image_size": size,
                     "batch_size": batch, "data": data_note, "sampler": "random", "space": "default"},
        "candidates_measured_while_training": len(waits),
        "wait_s": {"median": median_wait, "p90": float(np.percentile(waits, 90)), "max": waits[-1],
                   "all": [round(w, 4) for w in waits]},
        "training_step_s": {"median": step, "per_trained_arch": [round(s, 4) for s in steps],
                            "how": "one SGD step of a batch, alone, 1 thread"},
        "median_wait_in_steps": median_wait / step,
        "goal": {"median_wait_at_most_one_step": median_wait <= step},
        "driver": config.get("driver"), "states": trials["state"].value_counts().to_dict(),
        "wall_s": round(wall, 1), "machine": machine()}
    write_json(args.out, report)
    print(f"wait for the trainers to pause: median {median_wait:.3f} s, p90 {report['wait_s']['p90']:.3f} s, "
          f"max {waits[-1]:.3f} s over {len(waits)} candidates; one training step {step:.3f} s "
          f"(median wait = {median_wait / step:.2f} steps); driver {config.get('driver')}")
    return report


if __name__ == "__main__":
    main()
