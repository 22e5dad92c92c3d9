"""Latency backends: torch eager vs the shipped ONNX (fp32, int8) in ONNX Runtime, and whether the
recorded number is what the exported file runs at.

Takes ``--archs`` architectures of the default search space spread over MACs (common.spread_sample)
at 3x32x32, batch 1, one thread, and for each, one after another:

* times it as a search would with ``--latency-backend torch``, ``onnxruntime`` and ``onnxruntime
  --latency-precision int8`` (``measure_latency`` at the search's 0.1 s budget; int8 calibrated on
  32 training images), and the wall time of each measurement (export + quantization + timing:
  the backend's cost per candidate);
* writes the bytes each ONNX measurement timed (``deploy_bytes``, the file ``cspnas export``
  writes). After all architectures, every file is re-timed in one fresh process by plain ONNX
  Runtime at the recorded session options (experiments/retime_onnx.py): the recorded-vs-shipped
  error.

Then ``--acc-archs`` of them (the smallest ones) are trained briefly on reduced data (the CIFAR-10
16 px folder of common.small_cifar10, ``--train-subset`` images, ``--epochs``) and their validation
accuracy is measured in float32 (PyTorch) and as the int8 ONNX model (``int8_accuracy``, what a
search records as ``val_acc_int8``).

    flock /tmp/cspnas-bench.lock python experiments/latency_backends.py   # results/benchmarks/latency_backends.json
    python experiments/latency_backends.py --smoke --out /tmp/b.json       # 3 archs, digits
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import REPO, machine, small_cifar10, spearman, spread_sample, write_json

BACKENDS = {"torch": {"backend": "torch"}, "ort_fp32": {"backend": "onnxruntime"},
            "ort_int8": {"backend": "onnxruntime", "precision": "int8"}}


def retime(jobs: list[dict], seconds: float, workdir: Path) -> list[float]:
    """Median ms of each job's file, timed by plain ONNX Runtime in one fresh process."""
    path = workdir / "jobs.json"
    path.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "retime_onnx.py"), str(path),
                           "--seconds", str(seconds)], capture_output=True, text=True, timeout=1800, check=True)
    return [r["ms"] for r in json.loads(proc.stdout)]


def quantile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(values, q))


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p10": quantile(values, 0.1), "p90": quantile(values, 0.9),
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=30)
    ap.add_argument("--pool", type=int, default=400, help="random draws the archs are spread over")
    ap.add_argument("--min-run-time", type=float, default=0.1, help="timing budget per measurement, s "
                    "(the search's default latency_min_run_time_s)")
    ap.add_argument("--retime-seconds", type=float, default=0.5, help="timing budget of each re-timing, s")
    ap.add_argument("--acc-archs", type=int, default=3, help="archs trained for the int8 accuracy change")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="3 archs from a pool of 20, 0.02 s budgets, digits")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "latency_backends.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.pool, args.min_run_time, args.retime_seconds = 3, 20, 0.02, 0.05
        args.acc_archs, args.epochs = 1, 1

    import torch

    from cspnas.cost import LatencySettings, count_macs, measure_latency
    from cspnas.cost.onnx_runtime import deploy_bytes
    from cspnas.data import load_dataset
    from cspnas.models import build_model
    from cspnas.space.searchspace import load_space
    from cspnas.train import TrainConfig, train
    from cspnas.train.quantized import calibration_batch, int8_accuracy

    torch.set_num_threads(1)
    t_start = time.monotonic()
    if args.smoke:
        data, data_name = load_dataset("digits", split_seed=args.seed), "digits (bundled, 8x8 grey)"
    else:
        folder = small_cifar10(size=16)
        data = load_dataset("folder", folder, split_seed=args.seed, train_subset=args.train_subset)
        data_name = f"CIFAR-10 16px folder ({folder.name}), train subset {args.train_subset}"
    base = LatencySettings(in_chs=3, input_size=32, min_run_time_s=args.min_run_time, calibration_seed=args.seed)
    # the search's rule: int8 calibrates on its training images (here resized to the timed 32 px; digits has
    # one channel, so the smoke run repeats it to three)
    calibration = calibration_batch(data, base.calibration_images, args.seed, 32)
    if calibration.shape[1] != 3:
        calibration = calibration.repeat(3, axis=1)[:, :3]
    archs = spread_sample(load_space("default"), args.archs, in_chs=3, num_classes=10, input_size=32,
                          seed=args.seed, pool=args.pool)
    rows, jobs = [], []
    with tempfile.TemporaryDirectory(prefix="latency_backends.") as tmp:
        for i, arch in enumerate(archs):
            torch.manual_seed(0)  # as the search's CostMeter
            model = build_model(arch)
            row = {"arch_hash": arch.arch_hash(), "arch_summary": arch.summary(),
                   "macs": count_macs(model, in_chs=3, input_size=32).total}
            for name, kw in BACKENDS.items():
                settings = replace(base, **kw)
                t0 = time.perf_counter()
                lat = measure_latency(model, settings, calibration)
                row[name] = {"latency_ms": lat.ms, "iqr_ms": lat.iqr_ms, "runs": lat.runs,
                             "cost_s": time.perf_counter() - t0}
                if settings.backend == "onnxruntime":  # the file export writes for these weights
                    path = Path(tmp) / f"{i}-{name}.onnx"
                    path.write_bytes(deploy_bytes(model, settings, calibration))
                    row[name]["file_bytes"] = path.stat().st_size
                    jobs.append({"model": str(path), "backend_info": lat.backend,
                                 "shape": list(settings.input_shape), "row": i, "backend": name})
            rows.append(row)
            print(f"{i + 1}/{len(archs)} {row['arch_summary']}: " + ", ".join(
                f"{n} {row[n]['latency_ms']:.3f} ms" for n in BACKENDS), file=sys.stderr)

        # every shipped file re-timed after the search-like pass, in a fresh process
        for job, ms in zip(jobs, retime(jobs, args.retime_seconds, Path(tmp))):
            entry = rows[job["row"]][job["backend"]]
            entry["retimed_ms"], entry["retime_error"] = ms, ms / entry["latency_ms"] - 1

        # int8 accuracy after brief training: the smallest archs (cheapest to train on two cores)
        accuracy = []
        for arch in sorted(archs, key=lambda a: next(r["macs"] for r in rows if r["arch_hash"] == a.arch_hash()))[
                :args.acc_archs]:
            arch = arch.with_io(in_chs=data.in_chs, num_classes=data.num_classes)
            cfg = TrainConfig(epochs=args.epochs, seed=args.seed, device="cpu")
            torch.manual_seed(cfg.seed)  # as a search trial: same arch + seed -> same weights
            model = build_model(arch)
            result = train(model, data, cfg)
            fp32 = result.final_val_acc
            int8 = int8_accuracy(model, data, base.calibration_images, args.seed)
            accuracy.append({"arch_hash": arch.arch_hash(), "arch_summary": arch.summary(), "val_acc": fp32,
                             "val_acc_int8": int8, "change": int8 - fp32})
            print(f"accuracy {arch.summary()}: fp32 {fp32:.3f}, int8 {int8:.3f}", file=sys.stderr)

    def col(name: str, key: str) -> list[float]:
        return [r[name][key] for r in rows]

    torch_ms, fp32_ms, int8_ms = col("torch", "latency_ms"), col("ort_fp32", "latency_ms"), col("ort_int8", "latency_ms")
    report = {
        "settings": {"archs": args.archs, "pool": args.pool, "min_run_time_s": args.min_run_time,
                     "retime_seconds": args.retime_seconds, "input": [1, 3, 32, 32], "threads": 1,
                     "calibration_images": base.calibration_images, "acc_archs": args.acc_archs,
                     "epochs": args.epochs, "train_subset": None if args.smoke else args.train_subset,
                     "data": data_name, "seed": args.seed, "smoke": args.smoke},
        "machine": machine(),
        "latency_ms": {n: summary(col(n, "latency_ms")) for n in BACKENDS},
        "ratio": {"torch_over_ort_fp32": summary([t / f for t, f in zip(torch_ms, fp32_ms)]),
                  "ort_int8_over_ort_fp32": summary([q / f for q, f in zip(int8_ms, fp32_ms)]),
                  "torch_over_ort_int8": summary([t / q for t, q in zip(torch_ms, int8_ms)])},
        "spearman": {"torch_vs_ort_fp32": spearman(torch_ms, fp32_ms), "torch_vs_ort_int8": spearman(torch_ms, int8_ms),
                     "ort_fp32_vs_ort_int8": spearman(fp32_ms, int8_ms)},
        "cost_s_per_candidate": {n: summary(col(n, "cost_s")) for n in BACKENDS},
        "retime_abs_error": {n: {"median": statistics.median(abs(e) for e in col(n, "retime_error")),
                                 "p90": quantile([abs(e) for e in col(n, "retime_error")], 0.9),
                                 "median_signed": statistics.median(col(n, "retime_error"))}
                             for n in ("ort_fp32", "ort_int8")},
        "int8_accuracy": {"rows": accuracy,
                          "median_change": statistics.median(a["change"] for a in accuracy) if accuracy else None},
        "rows": rows,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("ratio", "spearman", "retime_abs_error")}, indent=1))
    return report


if __name__ == "__main__":
    main()
