"""How long measuring one candidate's full cost takes: build + params + fvcore MACs + latency.

Small candidates are sampled from the default search space at the default data's input
(digits, 1x8x8) and at CIFAR size (3x32x32); the large one is cspresnet50 at 3x224x224.
Latency uses the search's default settings (cpu, batch 1, 1 thread, float32, 0.1 s budget).
Each part is timed separately, per candidate, after one untimed warm-up candidate.

    python experiments/bench_cost.py            # writes results/benchmarks/cost_time.json
    python experiments/bench_cost.py --smoke    # 2 candidates, tiny budget (used by the tests)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import optuna
import torch

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency
from cspnas.models import build_model
from cspnas.space.searchspace import load_space


def time_candidate(arch, input_size: int, min_run_time_s: float) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(arch)
    t1 = time.perf_counter()
    params = count_params(model)
    macs = count_macs(model, in_chs=arch.in_chs, input_size=input_size).total
    t2 = time.perf_counter()
    lat = measure_latency(model, LatencySettings(in_chs=arch.in_chs, input_size=input_size,
                                                 min_run_time_s=min_run_time_s))
    t3 = time.perf_counter()
    return {"params": params, "macs": macs, "latency_ms": lat.ms, "build_s": t1 - t0,
            "count_s": t2 - t1, "latency_s": t3 - t2, "total_s": t3 - t0}


def summarize(rows: list[dict]) -> dict:
    keys = ("build_s", "count_s", "latency_s", "total_s")
    return {"n": len(rows), **{f"median_{k}": statistics.median(r[k] for r in rows) for k in keys},
            "max_total_s": max(r["total_s"] for r in rows),
            "median_params": statistics.median(r["params"] for r in rows)}


def sampled(n: int, in_chs: int, seed: int = 0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    for _ in range(n):
        trial = study.ask()
        archs.append(space.sample(trial, in_chs=in_chs, num_classes=10))
        study.tell(trial, 0.0)
    return archs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="sampled candidates per input size")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/cost_time.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 2 if args.smoke else args.n
    budget = 0.02 if args.smoke else 0.1
    groups = {}
    for label, in_chs, size in (("default space @1x8x8", 1, 8), ("default space @3x32x32", 3, 32)):
        archs = sampled(n + 1, in_chs)
        time_candidate(archs[0], size, budget)  # warm-up: first-call costs (fvcore, thread pools)
        groups[label] = summarize([time_candidate(a, size, budget) for a in archs[1:]])
    if not args.smoke:
        big = build_model("cspresnet50").arch
        groups["cspresnet50 @3x224x224"] = summarize([time_candidate(big, 224, budget) for _ in range(3)])
    report = {"what": "seconds to measure one candidate's cost (build + params + fvcore MACs + latency)",
              "latency_settings": {"device": "cpu", "batch_size": 1, "threads": 1, "dtype": "float32",
                                   "min_run_time_s": budget},
              "groups": groups,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for label, g in groups.items():
        print(f"{label:26s} total {g['median_total_s']:.3f} s (build {g['median_build_s']:.3f}, "
              f"params+MACs {g['median_count_s']:.3f}, latency {g['median_latency_s']:.3f}); max {g['max_total_s']:.3f} s")


if __name__ == "__main__":
    main()
