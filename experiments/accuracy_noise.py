"""Accuracy noise: how much does the brief-training accuracy of one architecture move without any change to it?

Two sources, measured on the reduced CIFAR-10 of the experiments (experiments/common.py: 16x16, 1,000
validation images) with the search's brief recipe (3 epochs, TrainConfig defaults, as
experiments/proxy_fidelity.py):

* **seed to seed**: the same architecture and data split, ``--seeds`` training seeds (initial weights,
  batch order, augmentation);
* **kernel to kernel**: the same architecture, data and seed, trained with PyTorch's CPU kernels forced to
  another instruction set (``ATEN_CPU_CAPABILITY=default`` (scalar) vs ``avx2``) in a fresh process (the
  process's own kernels, AVX2 on an AVX2 CPU, reuse its seed run): the rounding differs, a few validation
  answers flip, as between two machines.

For ``--archs`` architectures at evenly spaced MAC ranks of the default space (every k-th of
proxy_fidelity's twelve, so the first is the architecture whose 0.298 / 0.313 / 0.292 prompted this), it
reports per architecture the seed standard deviation and range and the kernel differences, pooled
estimates over the architectures, and a binomial reference sqrt(p (1 - p) / n_val): the noise of an
accuracy counted on n_val images if each answer were an independent coin. ``recommended_points`` is the
tie tolerance the search's front uses by default (``--accuracy-noise``): the standard deviation of the
difference of two brief-training accuracies, sqrt(2) x the per-run standard deviation (the larger of the
pooled seed and kernel estimates), in accuracy points.

    nice -n 10 python experiments/accuracy_noise.py        # results/benchmarks/accuracy_noise.json
    python experiments/accuracy_noise.py --smoke --out /tmp/n.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, machine, small_cifar10, spread_sample, train_arch, write_json

from cspnas.cost import count_macs
from cspnas.data import load_dataset
from cspnas.models import build_model
from cspnas.space import arch_from_dict
from cspnas.space.searchspace import load_space


def load_data(smoke: bool, split_seed: int, train_subset: int | None):
    if smoke:
        return load_dataset("digits", split_seed=split_seed, train_subset=train_subset), "digits (bundled), smoke"
    folder = small_cifar10()
    return (load_dataset("folder", folder, split_seed=split_seed, train_subset=train_subset),
            f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py")


def train_in_subprocess(arch, *, kernel: str, seed: int, args) -> dict:
    """Train ``arch`` in a fresh process whose ATen CPU kernels are forced to ``kernel``."""
    job = {"arch": arch.to_dict(), "seed": seed, "epochs": args.epochs, "smoke": args.smoke, "threads": args.threads,
           "split_seed": args.split_seed, "train_subset": args.train_subset}
    env = {**os.environ, "ATEN_CPU_CAPABILITY": kernel, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--train-one", json.dumps(job)], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"kernel {kernel} run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_one(job_text: str) -> None:
    """--train-one: the subprocess side of train_in_subprocess (prints one JSON line)."""
    import torch

    job = json.loads(job_text)
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    data, _ = load_data(job["smoke"], job["split_seed"], job["train_subset"])
    out = train_arch(arch_from_dict(job["arch"]), data, epochs=job["epochs"], seed=job["seed"])
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(out))


def sample_std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict], n_val: int) -> dict:
    """Per-run noise estimates pooled over architectures (pooled variance: mean of the per-arch variances)."""
    seed_vars = [sample_std(r["seed_acc"]) ** 2 for r in rows if len(r["seed_acc"]) > 1]
    # one kernel pair = two runs of the same thing: var(one run) = mean(d^2) / 2
    diffs = [d for r in rows for d in r["kernel_diffs"]]
    kernel_var = sum(d * d for d in diffs) / (2 * len(diffs)) if diffs else None
    seed_std = math.sqrt(statistics.mean(seed_vars)) if seed_vars else None
    per_run = [v for v in (seed_std, math.sqrt(kernel_var) if kernel_var is not None else None) if v is not None]
    per_run_std = max(per_run) if per_run else None
    mean_acc = statistics.mean(a for r in rows for a in r["seed_acc"])
    binomial = math.sqrt(mean_acc * (1 - mean_acc) / n_val)
    return {
        "validation_images": n_val,
        "seed_std_pooled": seed_std,
        "seed_range_mean": statistics.mean(r["seed_range"] for r in rows),
        "seed_range_max": max(r["seed_range"] for r in rows),
        "kernel_pairs": len(diffs),
        "kernel_abs_diff_mean": statistics.mean(abs(d) for d in diffs) if diffs else None,
        "kernel_abs_diff_max": max(abs(d) for d in diffs) if diffs else None,
        "kernel_std_per_run": math.sqrt(kernel_var) if kernel_var is not None else None,
        # the larger of the two: trials of one search share the seed, but a perturbation of the kernel kind
        # (another machine, library build or architecture detail) moves a result as a new seed does
        "per_run_std": per_run_std,
        "mean_accuracy": mean_acc,
        "binomial_std_at_mean": binomial,
        "binomial_std_of_difference_at_mean": math.sqrt(2) * binomial,
        "per_run_std_vs_binomial": per_run_std / binomial if per_run_std else None,
        # what the search's --accuracy-noise defaults to: the std of a difference of two runs, in points
        "recommended_points": round(100 * math.sqrt(2) * per_run_std, 1) if per_run_std else None,
    }


def combine(paths: list[Path], out: Path) -> dict:
    """One report from the rows of several (--only) runs of the same settings, ordered by MACs."""
    parts = [json.loads(p.read_text()) for p in paths]

    def common(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in ("only", "threads") and v is not None}

    settings = common(parts[0]["settings"])
    if any(common(p["settings"]) != settings for p in parts):
        sys.exit("--combine: the files were made with different settings")
    rows = sorted({r["arch_hash"]: r for p in parts for r in p["rows"]}.values(), key=lambda r: r["macs"])
    report = {"experiment": "accuracy_noise", "complete": len(rows) == settings["archs"], "settings": settings,
              "result": summarize(rows, settings["data_summary"]["val"]),
              "native_cpu_capability": parts[0].get("native_cpu_capability"),
              "wall_s": [p.get("wall_s") for p in parts], "machine": parts[0].get("machine"),
              "combined_from": [p.name for p in paths], "rows": rows}
    write_json(out, report)
    print(json.dumps(report["result"], indent=1))
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=4, help="architectures, every k-th of proxy_fidelity's twelve")
    ap.add_argument("--seeds", type=int, default=4, help="training seeds per architecture (0..N-1)")
    ap.add_argument("--kernels", default="default,avx2", help="ATEN_CPU_CAPABILITY values compared in subprocesses")
    ap.add_argument("--kernel-seeds", type=int, default=1, help="seeds (0..N-1) trained under every kernel")
    ap.add_argument("--kernel-archs", type=int, default=None, help="only the first N architectures get kernel runs")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--split-seed", type=int, default=0, help="data split (and architecture draw) seed, fixed")
    ap.add_argument("--smoke", action="store_true",
                    help="digits (300 training images), the 2 smallest archs, 2 seeds, 1 epoch, one kernel pair")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of every training (default: torch's); "
                    "1 on an overloaded host, where spinning threads waste the CPU")
    ap.add_argument("--only", default=None, metavar="I,J", help="train only these of the --archs picks (0-based), "
                    "e.g. to split the run over two processes; --combine joins the files")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                    help="join the rows of these result files (same settings but --only) into --out and summarize")
    ap.add_argument("--train-one", metavar="JSON", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "accuracy_noise.json")
    args = ap.parse_args(argv)
    if args.train_one:
        train_one(args.train_one)
        return {}
    if args.combine:
        return combine(args.combine, args.out)
    if args.smoke:
        args.archs, args.seeds, args.epochs, args.kernel_seeds, args.train_subset = 2, 2, 1, 1, 300
        args.kernel_archs = 1
    kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    data, data_note = load_data(args.smoke, args.split_seed, args.train_subset)
    settings = {"archs": args.archs, "seeds": args.seeds, "kernels": kernels, "kernel_seeds": args.kernel_seeds, "kernel_archs": args.kernel_archs,
                "epochs": args.epochs, "train_subset": args.train_subset, "split_seed": args.split_seed,
                "space": "default", "data": data_note, "data_summary": data.summary(),
                "train": "cspnas TrainConfig defaults (batch 128, lr 0.2, SGD nesterov, label smoothing 0.1, "
                         "warmup 0.5 epoch, linear decay), cpu, torch threads as the process default"}
    import torch

    native = torch.backends.cpu.get_cpu_capability()
    if args.threads:
        torch.set_num_threads(args.threads)
    pool = spread_sample(load_space("default"), 3 if args.smoke else 12, in_chs=data.in_chs,
                         num_classes=data.num_classes, input_size=data.input_size, seed=args.split_seed,
                         pool=20 if args.smoke else 400)
    picks = sorted({round(i * (len(pool) - 1) / max(args.archs - 1, 1)) for i in range(args.archs)})
    archs = pool[:args.archs] if args.smoke else [pool[i] for i in picks]  # smoke: the smallest, to stay cheap
    if args.only:
        archs = [archs[int(i)] for i in args.only.split(",")]
        settings["only"] = args.only
    if args.threads:
        settings["threads"] = args.threads
    t0 = time.perf_counter()
    rows: list[dict] = []
    for arch in archs:
        seed_acc = [train_arch(arch, data, epochs=args.epochs, seed=s)["val_acc"] for s in range(args.seeds)]
        kernel_acc: dict[str, dict[str, float]] = {}
        diffs: list[float] = []
        with_kernels = args.kernel_archs is None or len(rows) < args.kernel_archs
        for s in range(min(args.kernel_seeds, args.seeds) if with_kernels else 0):
            # the kernels this process runs anyway (AVX2 on an AVX2 CPU) reuse its seed run: training is
            # deterministic in one kind of process (common.SAME_MACHINE_TOLERANCE), the others run afresh
            runs = {k: {"val_acc": seed_acc[s], "cpu_capability": native} if k.upper() == native
                    else train_in_subprocess(arch, kernel=k, seed=s, args=args) for k in kernels}
            kernel_acc[str(s)] = {k: r["val_acc"] for k, r in runs.items()}
            kernel_acc[str(s)]["capabilities"] = {k: r["cpu_capability"] for k, r in runs.items()}
            accs = [r["val_acc"] for r in runs.values()]
            diffs += [accs[i] - accs[0] for i in range(1, len(accs))]
        model = build_model(arch)
        rows.append({"arch_hash": arch.arch_hash(), "summary": arch.summary(), "torch_threads": torch.get_num_threads(),
                     "macs": count_macs(model, in_chs=data.in_chs, input_size=data.input_size).total,
                     "seed_acc": seed_acc, "seed_std": sample_std(seed_acc),
                     "seed_range": max(seed_acc) - min(seed_acc), "kernel_acc": kernel_acc,
                     "kernel_diffs": diffs,
                     "binomial_std": math.sqrt(statistics.mean(seed_acc) * (1 - statistics.mean(seed_acc))
                                               / int(data.val_y.shape[0])),
                     "arch": arch.to_dict()})
        print(f"{len(rows)}/{len(archs)} {arch.summary()}: seeds {' '.join(f'{a:.3f}' for a in seed_acc)}; "
              f"kernels {kernel_acc} ({time.perf_counter() - t0:.0f} s)", flush=True)
        write_json(args.out, {"experiment": "accuracy_noise", "complete": False, "settings": settings,
                              "result": summarize(rows, int(data.val_y.shape[0])), "rows": rows})

    result = summarize(rows, int(data.val_y.shape[0]))
    report = {"experiment": "accuracy_noise", "complete": True, "settings": settings, "result": result,
              "native_cpu_capability": native,
              "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(), "rows": rows}
    write_json(args.out, report)
    print(json.dumps(result, indent=1))
    return report


if __name__ == "__main__":
    main()
