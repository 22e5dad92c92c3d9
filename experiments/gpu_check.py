"""GPU check: does cspnas use one CUDA GPU well? Proxy-training throughput, a real search, CUDA latency.

Three parts, on one GPU, within ``--max-minutes`` (default 8) in all:

1. training throughput of the proxy trainer (cspnas.train.train, as a search trial trains) with
   bf16 autocast + channels_last vs plain fp32 (``cspnas search --train-precision bf16 / fp32``),
   for ``--archs`` default-space architectures (smallest and largest MACs of a random pool) on
   reduced CIFAR-10 (experiments/common.py small_cifar10: 16x16 or ``--image-size``, ``--train-subset`` images);
   each mode runs once untimed on two batches, then ``--repeats`` times in alternating order;
2. CUDA latency (cspnas.cost.measure_latency, LatencySettings(device="cuda")) in float32 and
   bfloat16, batch 1 and 32: those architectures at 32x32, and the cspresnet50 preset at 224x224;
3. a short real search through the CLI in a subprocess (``cspnas search --device cuda``, budget
   12, 2 epochs, 5,000 training images; latency is measured on the CPU, the search's default):
   wall time, trials complete, front size, best accuracy.

They run in that order; the search gets the time that is left, and a part that would start
past the deadline is skipped with a note. A part that fails is recorded and the others still
run (exit code 1 at the end). The fp32 numbers use PyTorch's defaults, so cuDNN convolutions
may use TF32 (the flags are recorded).

Data: ``../shared/data/cifar10-jpeg.tar.gz`` (or the reduced folder already under .cache/); on
a machine without it pass ``--data-dir`` = an extracted cifar10-jpeg folder (train/, test/);
with neither, it falls back to the bundled digits with a printed note.

    bash experiments/gpu_check.sh                    # results/benchmarks/gpu_check.json
    python experiments/gpu_check.py --data-dir /data/cifar10-jpeg --max-minutes 8
    python experiments/gpu_check.py --smoke --out /tmp/g.json   # same code paths on CPU, tiny sizes

Without a CUDA device (and without --smoke) it prints one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

from common import REPO, machine, small_cifar10, spread_sample, write_json

from cspnas.search.settings import TRAIN_PRECISIONS

# the search's --train-precision choices, under the names the result files use
MODES = {"fp32": TRAIN_PRECISIONS["fp32"], "bf16_channels_last": TRAIN_PRECISIONS["bf16"]}


class Clock:
    def __init__(self, minutes: float):
        self.start = time.monotonic()
        self.deadline = self.start + minutes * 60

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def resolve_data(args) -> tuple[str, Path | None, int | None, str]:
    """(dataset name, folder, train_subset, note) for the training and search parts."""
    if args.smoke:
        return "digits", None, None, "digits (bundled), smoke"
    if args.data_dir is not None:
        src = Path(args.data_dir).expanduser()
        if not ((src / "train").is_dir() and (src / "test").is_dir()):
            sys.exit(f"--data-dir {src}: expected an extracted cifar10-jpeg folder with train/ and test/ inside")
        folder = small_cifar10(size=args.image_size, source=src)
    else:
        try:
            folder = small_cifar10(size=args.image_size)
        except SystemExit as e:  # no tarball, no extracted copy: say so and carry on with digits
            note = f"CIFAR-10 not available ({e}); FALLING BACK to the bundled digits data (8x8 grey)"
            print(f"gpu_check: {note}", flush=True)
            return "digits", None, None, note
    return ("folder", folder, args.train_subset,
            f"CIFAR-10 reduced: {folder.name} ({args.image_size}x{args.image_size} PNG), see experiments/common.py")


# -- part 1: training throughput ---------------------------------------------------------------------

def part_train(archs, data, device: str, epochs: int, repeats: int, clock: Clock, notes: list[str]) -> list[dict]:
    import torch

    from cspnas.cost import count_macs, count_params
    from cspnas.models import build_model
    from cspnas.train import TrainConfig, train

    def run(arch, d, mode: str, n_epochs: int) -> dict:
        cfg = TrainConfig(epochs=n_epochs, seed=0, device=device, **MODES[mode])
        torch.manual_seed(0)  # same arch + seed -> same initial weights, as a search trial
        res = train(build_model(arch), d, cfg)
        return {"images_per_s": res.images_per_s, "final_val_acc": res.final_val_acc, "seconds": res.seconds}

    warm = replace(data, train_x=data.train_x[:256], train_y=data.train_y[:256],
                   val_x=data.val_x[:128], val_y=data.val_y[:128])
    out = []
    for arch in archs:
        model = build_model(arch)
        row = {"arch_hash": arch.arch_hash(), "arch_summary": arch.summary(), "params": count_params(model),
               "macs": count_macs(model, in_chs=data.in_chs, input_size=data.input_size).total}
        del model
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for mode in MODES:  # one-time costs (CUDA context, cuDNN algorithm choice, lazy init) untimed
            run(arch, warm, mode, 1)
        for r in range(repeats):
            for mode in (list(MODES) if r % 2 == 0 else list(MODES)[::-1]):
                if clock.left() <= 0:
                    notes.append(f"train: deadline reached, {arch.arch_hash()} {mode} repeat {r + 1} skipped")
                    break
                runs[mode].append(run(arch, data, mode, epochs))
        for mode, rs in runs.items():
            row[mode] = {"images_per_s": statistics.median(x["images_per_s"] for x in rs) if rs else None,
                         "final_val_acc": statistics.median(x["final_val_acc"] for x in rs) if rs else None,
                         "runs": rs}
        a, b = row["bf16_channels_last"]["images_per_s"], row["fp32"]["images_per_s"]
        row["speedup_bf16_channels_last"] = a / b if a and b else None
        out.append(row)
        print(f"train {arch.summary()}: fp32 {b or 0:.0f} img/s, bf16+channels_last {a or 0:.0f} img/s", flush=True)
        if clock.left() <= 0:
            break
    return out


# -- part 2: latency -----------------------------------------------------------------------------------

def part_latency(archs, device: str, smoke: bool, clock: Clock, notes: list[str]) -> list[dict]:
    import torch

    from cspnas.cost import LatencySettings, measure_latency
    from cspnas.models import build_model

    batches = (1, 4) if smoke else (1, 32)
    base = LatencySettings(device=device, min_run_time_s=0.02 if smoke else 0.1, warmup=1 if smoke else 3)
    preset_size = 32 if smoke else 224
    targets = []
    for arch in archs:
        torch.manual_seed(0)
        targets.append((f"{arch.summary()} [{arch.arch_hash()}]", build_model(arch, in_chs=3, num_classes=10), 32))
    torch.manual_seed(0)
    targets.append(("cspresnet50 (preset)", build_model("cspresnet50"), preset_size))
    out = []
    for name, model, size in targets:
        for batch in batches:
            for dtype in ("float32", "bfloat16"):
                if clock.left() <= 0:
                    notes.append(f"latency: deadline reached, {name} {size}px batch {batch} {dtype} skipped")
                    continue
                s = replace(base, batch_size=batch, input_size=size, dtype=dtype)
                lat = measure_latency(model, s)
                out.append({"model": name, "input_size": size, "batch_size": batch, "dtype": dtype,
                            "median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms, "runs": lat.runs, "noisy": lat.noisy,
                            "images_per_s": batch / lat.median_ms * 1e3, "settings": s.to_dict()})
                print(f"latency {name} {size}px b{batch} {dtype}: {lat.median_ms:.3f} ms", flush=True)
    return out


# -- part 3: a real search through the CLI ------------------------------------------------------------------

def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT (the CLI then writes its tables and exits 130), then SIGTERM, then SIGKILL, to the
    process group that ``proc`` leads (the CLI and the Ray processes it started)."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


def part_search(args, dataset: str, folder: Path | None, subset: int | None, device: str, clock: Clock,
                notes: list[str]) -> dict:
    import pandas as pd

    results = Path(tempfile.mkdtemp(prefix="gpu_check_search."))
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(args.budget), "--epochs", str(args.epochs),
           "--device", device, "--dataset", dataset, "--results-dir", str(results), "--name", "gpu",
           "--no-dashboard", "--keep-weights", "none", "--concurrency", str(args.concurrency), "--seed", "0"]
    if folder is not None:
        cmd += ["--data-dir", str(folder)]
    if subset is not None:
        cmd += ["--train-subset", str(subset)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = results / "search.log"
    timeout = max(1.0, clock.left())
    t0 = time.monotonic()
    timed_out = False
    try:
        with open(log, "w") as fh:
            # own session: on a timeout the CLI and the Ray processes it started go together
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except BaseException as e:  # the deadline, or Ctrl-C: stop the whole search, politely first
                stop_group(proc)
                rc = proc.returncode
                if not isinstance(e, subprocess.TimeoutExpired):
                    raise
                timed_out = True
        wall = time.monotonic() - t0
        if timed_out:
            notes.append(f"search: stopped at the deadline after {wall:.0f} s (rc {rc}); counts are partial")
        run_dir = results / "gpu"
        trials = pd.read_csv(run_dir / "trials.csv") if (run_dir / "trials.csv").is_file() else pd.DataFrame()
        front = pd.read_csv(run_dir / "pareto.csv") if (run_dir / "pareto.csv").is_file() else pd.DataFrame()
        complete = trials[trials["state"] == "complete"] if len(trials) else trials
        out = {"command": " ".join(cmd[1:]).replace(str(results), "<tmp>"), "returncode": rc, "timed_out": timed_out,
               "wall_s": round(wall, 1), "budget": args.budget, "epochs": args.epochs,
               "trials": int(len(trials)), "trials_complete": int(len(complete)),
               "states": {str(k): int(v) for k, v in trials["state"].value_counts().items()} if len(trials) else {},
               "front_size": int(len(front)),
               "best_accuracy": float(complete["accuracy"].max()) if len(complete) else None,
               "median_train_s": float(complete["train_seconds"].median()) if len(complete) else None,
               "median_cost_s": float(trials["cost_seconds"].median()) if len(trials) else None,
               "rows": [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in trials[
                   ["trial", "state", "arch_summary", "accuracy", "macs", "latency_ms", "train_seconds"]
               ].to_dict("records")] if len(trials) else []}
        if rc != 0 and not timed_out:
            out["log_tail"] = log.read_text()[-3000:]
        print(f"search: {out['trials_complete']}/{args.budget} complete in {wall:.0f} s, front {out['front_size']}, "
              f"best acc {out['best_accuracy']}", flush=True)
        return out
    finally:
        shutil.rmtree(results, ignore_errors=True)


# -- report ---------------------------------------------------------------------------------------------

def table_rows(report: dict) -> list[dict]:
    rows = []
    for r in report.get("train_throughput") or []:
        for mode in MODES:
            ips, acc = r[mode]["images_per_s"], r[mode]["final_val_acc"]
            res = f"{ips:,.0f} img/s, val acc {acc:.3f}" if ips else "skipped"
            if mode != "fp32" and r["speedup_bf16_channels_last"]:
                res += f" ({r['speedup_bf16_channels_last']:.2f}x fp32)"
            rows.append({"part": "train", "item": r["arch_summary"], "setting": mode, "result": res})
    for r in report.get("latency") or []:
        rows.append({"part": "latency", "item": f"{r['model']} {r['input_size']}px",
                     "setting": f"{r['dtype']} batch {r['batch_size']}",
                     "result": f"{r['median_ms']:.3f} ms (IQR {r['iqr_ms'] / r['median_ms']:.0%}), "
                               f"{r['images_per_s']:,.0f} img/s"})
    s = report.get("search")
    if s:
        best = f"{s['best_accuracy']:.3f}" if s["best_accuracy"] is not None else "-"
        rows.append({"part": "search", "item": f"budget {s['budget']}, {s['epochs']} epochs",
                     "setting": f"--device {report['device']}",
                     "result": f"{s['trials_complete']}/{s['budget']} complete, front {s['front_size']}, "
                               f"best acc {best}, {s['wall_s']:.0f} s (rc {s['returncode']})"})
    for part, err in report["errors"].items():
        rows.append({"part": part, "item": "ERROR", "setting": "", "result": err.splitlines()[-1][:100]})
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ("part", "item", "setting", "result")
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="extracted cifar10-jpeg folder, if ../shared/data is not there")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--image-size", type=int, default=16, help="CIFAR-10 reduced to this size (32 = original)")
    ap.add_argument("--archs", type=int, default=2, help="default-space architectures (spread over MACs)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per training run and per search trial")
    ap.add_argument("--repeats", type=int, default=2, help="timed training runs per mode")
    ap.add_argument("--budget", type=int, default=12, help="search budget")
    ap.add_argument("--concurrency", type=int, default=2, help="search trials at once")
    ap.add_argument("--max-minutes", type=float, default=8.0, help="total time budget; later parts are skipped")
    ap.add_argument("--smoke", action="store_true", help="CPU, digits, tiny sizes: exercises every code path")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "gpu_check.json")
    args = ap.parse_args(argv)

    import torch

    with warnings.catch_warnings():  # a CUDA build without a driver warns here; the line below says it all
        warnings.simplefilter("ignore")
        has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.smoke:
        print(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
              "sees no GPU; run it on a GPU machine, or --smoke to exercise it on CPU", file=sys.stderr)
        return 2
    if args.smoke:
        args.archs, args.epochs, args.repeats, args.budget, args.concurrency = 2, 1, 1, 2, 1
    device = "cpu" if args.smoke else "cuda"
    clock = Clock(args.max_minutes)
    # One intra-op thread, as a search trial (--cpus-per-trial 1); on a busy CPU more threads spin
    # against each other and the CPU smoke crawls. On CUDA the host threads barely matter.
    torch.set_num_threads(1)

    from cspnas.data import load_dataset
    from cspnas.space.searchspace import load_space

    dataset, folder, subset, data_note = resolve_data(args)
    data = load_dataset(dataset, folder, train_subset=subset)
    archs = spread_sample(load_space("default"), args.archs, in_chs=data.in_chs, num_classes=data.num_classes,
                          input_size=data.input_size, seed=0, pool=20 if args.smoke else 100)
    report: dict = {
        "benchmark": "gpu_check", "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine()),
        "settings": {"smoke": args.smoke, "max_minutes": args.max_minutes, "data": data_note,
                     "image_size": None if dataset == "digits" else args.image_size,
                     "data_summary": data.summary(), "train_subset": subset, "archs": args.archs,
                     "epochs": args.epochs, "repeats": args.repeats, "budget": args.budget,
                     "concurrency": args.concurrency, "modes": MODES,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "torch_threads": torch.get_num_threads()},
        "machine": machine(), "notes": [data_note] if dataset == "digits" and not args.smoke else [],
        "errors": {}, "part_seconds": {},
        "train_throughput": None, "latency": None, "search": None,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "bf16_supported": torch.cuda.is_bf16_supported()}

    parts = [("train_throughput", lambda: part_train(archs, data, device, args.epochs, args.repeats, clock,
                                                     report["notes"])),
             ("latency", lambda: part_latency(archs, device, args.smoke, clock, report["notes"])),
             ("search", lambda: part_search(args, dataset, folder, subset, device, clock, report["notes"]))]
    for name, fn in parts:
        if clock.left() <= 0:
            report["notes"].append(f"{name}: skipped, the {args.max_minutes:g}-minute budget was spent")
            continue
        t0 = time.monotonic()
        try:
            report[name] = fn()
        except Exception:
            report["errors"][name] = traceback.format_exc()
            print(f"gpu_check: part {name} failed:\n{report['errors'][name]}", file=sys.stderr, flush=True)
        report["part_seconds"][name] = round(time.monotonic() - t0, 1)
        if device == "cuda":
            torch.cuda.empty_cache()
        write_json(args.out, report)  # partial results survive a later crash or kill
    report["wall_s"] = round(clock.elapsed(), 1)
    report["table"] = table_rows(report)
    write_json(args.out, report)
    print(f"\nGPU check on {report['device_name']} ({device}), {report['wall_s']:.0f} s")
    print_table(report["table"])
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"-> {args.out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
