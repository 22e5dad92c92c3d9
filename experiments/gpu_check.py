"""GPU check: does cspnas search well on one CUDA GPU? Packed trials, the CUDA step, a 200-trial search.

The evidence run of issue 16 (``--parts steps,search``, the default), within ``--max-minutes``
(default 9: a lent machine gives 15 minutes of device time, its start-up included, and at most 10
minutes per command; run the two parts as two commands, see below):

1. ``steps``: for ``--archs`` default-space architectures (smallest to largest MACs) and each
   ``--cuda-step`` mode (eager, graph, compile; cspnas.train.loop.DeviceStep), two epochs of the
   search's proxy training on ``--steps-images`` training images: the first epoch pays the setup
   (CUDA-graph capture, torch.compile), the second is steady state. ``setup_s`` = epoch 1 - epoch 2;
   the decision rule per architecture: the mode with the least ``setup_s + epochs x images / img/s``
   for one search trial's training (``best_for_search``). ``--search-cuda-step auto`` runs the
   search with the mode that wins summed over the architectures. Capped at ``--steps-minutes``.
2. ``search``: ``cspnas search --budget 200 --target-latency 10ms --epochs 5`` on the full CIFAR-10
   (50,000 training images minus 10% validation, 32x32) through the CLI in a subprocess, trials
   packed on the GPU (``--concurrency``, the default --trials-per-gpu), latency measured on the CPU.
   Reported: wall time, trials per minute, aggregate training img/s (images trained by all trials
   / search wall time), GPU utilisation and memory sampled from nvidia-smi every second, the
   driver's idle share (when the run record has one), worker RSS (the trials' ``worker_rss_mb``),
   ledger admission waits and out-of-memory retries.

GOAL (issue 16): 200 trials in <= 10 minutes on one H100/H200, i.e. about 75,000 training img/s in
aggregate (200 x 5 epochs x 45,000 images / 600 s); ``goal`` and ``goal_met`` in the JSON.

Expected output (JSON, default results/benchmarks/gpu_search.json): ``settings``, ``machine``,
``gpu`` (name, memory), ``steps`` (per arch: ``modes`` {eager, graph, compile: first_epoch_s,
steady_epoch_s, setup_s, images_per_s, val_acc, or error}, ``search_training_s`` per mode,
``best_for_search``), ``search`` (command, returncode, timed_out, wall_s, trials, trials_complete,
states, trials_per_min, train_images, aggregate_images_per_s, per_trial_images_per_s,
best_accuracy, front_size, gpu_util {mean, median, p90, samples}, gpu_memory_used_mib_max,
driver_idle_share, worker_rss_mb {max, per worker first/last}, admission_wait_s {median, max},
retried_alone), ``goal``, ``goal_met``, ``notes``, ``errors``; and a table on stdout.

Older parts stay available: ``--parts train,latency,search --data reduced --image-size 16
--train-subset 5000 --archs 2 --epochs 2 --budget 12 --concurrency 2 --target-latency ''
--out results/benchmarks/gpu_check.json`` reproduces the first check (bf16 vs fp32 training
throughput on reduced CIFAR-10, CUDA latency of two archs and cspresnet50).

Data: the full CIFAR-10 from ``../shared/data/cifar10-jpeg.tar.gz`` (or CSPNAS_CIFAR10_JPEG, or an
extracted folder under .cache/; ``--data reduced`` uses experiments/common.py's small_cifar10 at
``--image-size``); ``--data-dir`` = an extracted cifar10-jpeg folder (train/, test/). With none of
them it falls back to the bundled digits with a printed note.

On a lent GPU machine (no ray/optuna/fvcore there, 64 MiB carry): build the carry here once with
``bash experiments/gpu_bundle.sh`` (.gpu-carry/: the CIFAR-10 tarball + trimmed cp312 wheels,
55 MiB), then, with carry [".gpu-carry"] (the .sh unpacks it), two commands of the device tool:

    bash experiments/gpu_check.sh --parts steps --max-minutes 3 --out $OUT/gpu_steps.json
    bash experiments/gpu_check.sh --parts search --search-cuda-step MODE --max-minutes 9 --out $OUT/gpu_search.json

(MODE: the first command's winner, printed as "-> MODE" per architecture). On a machine of your own,
``bash experiments/gpu_check.sh --max-minutes 12.5`` runs both.

    bash experiments/gpu_check.sh                       # both parts, 9 min in all
    python experiments/gpu_check.py --smoke --out /tmp/g.json   # every part on CPU, tiny sizes

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

from common import REPO, cifar10_jpeg, machine, small_cifar10, spread_sample, write_json

from cspnas.search.settings import TRAIN_PRECISIONS
from cspnas.train.config import CUDA_STEPS

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
    try:
        if args.data_dir is not None:
            src = Path(args.data_dir).expanduser()
            if not ((src / "train").is_dir() and (src / "test").is_dir()):
                sys.exit(f"--data-dir {src}: expected an extracted cifar10-jpeg folder with train/ and test/ inside")
        else:
            src = cifar10_jpeg()
        if args.data == "full":
            return "folder", src, args.train_subset, f"CIFAR-10 full: {src.name} (JPEG, 32x32)"
        folder = small_cifar10(size=args.image_size, source=src)
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


# -- part: the CUDA step modes ------------------------------------------------------------------------

def part_steps(archs, data, device: str, args, clock: Clock, notes: list[str]) -> list[dict]:
    """Setup cost and steady throughput of each --cuda-step mode per architecture, and which mode
    trains one search trial (args.epochs epochs on the search's training split) fastest."""
    import torch

    from cspnas.cost import count_macs, count_params
    from cspnas.models import build_model
    from cspnas.train import TrainConfig, train

    modes = CUDA_STEPS if device == "cuda" else ("eager",)  # the modes act on CUDA only
    deadline = time.monotonic() + args.steps_minutes * 60
    n = min(args.steps_images, len(data.train_x))
    sub = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
    search_images = (len(data.train_x) // args.batch_size) * args.batch_size * args.epochs
    warm = replace(data, train_x=data.train_x[:256], train_y=data.train_y[:256], val_x=data.val_x[:128],
                   val_y=data.val_y[:128])
    torch.manual_seed(0)  # one-time costs (CUDA context, lazy init) outside the timings
    train(build_model(archs[0]), warm, TrainConfig(epochs=1, device=device, **MODES["fp32"]))
    out = []
    for arch in archs:
        model = build_model(arch)
        row = {"arch_hash": arch.arch_hash(), "arch_summary": arch.summary(), "params": count_params(model),
               "macs": count_macs(model, in_chs=data.in_chs, input_size=data.input_size).total, "modes": {}}
        del model
        for mode in modes:
            if time.monotonic() > deadline or clock.left() <= 0:
                notes.append(f"steps: --steps-minutes spent, {arch.arch_hash()} {mode} skipped")
                continue
            reports = []
            cfg = TrainConfig(epochs=2, seed=0, device=device, batch_size=args.batch_size, cuda_step=mode,
                              **MODES["fp32"])
            torch.manual_seed(0)
            try:
                train(build_model(arch), sub, cfg, on_epoch=reports.append)
            except Exception as e:  # e.g. torch.compile without a C compiler: a result, not the end
                row["modes"][mode] = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}
                continue
            first, steady = reports
            row["modes"][mode] = {"first_epoch_s": round(first.seconds, 3), "steady_epoch_s": round(steady.seconds, 3),
                                  "setup_s": round(max(0.0, first.seconds - steady.seconds), 3),
                                  "images_per_s": round(steady.images_per_s, 1), "val_acc": steady.val_acc}
        cost = {m: r["setup_s"] + search_images / r["images_per_s"] for m, r in row["modes"].items() if "error" not in r}
        row["search_training_s"] = {m: round(c, 2) for m, c in cost.items()}
        row["best_for_search"] = min(cost, key=cost.get) if cost else None
        out.append(row)
        print(f"steps {arch.summary()}: " + ", ".join(
            f"{m} {r['images_per_s']:.0f} img/s + {r['setup_s']:.1f} s setup" if "error" not in r else f"{m} failed"
            for m, r in row["modes"].items()) + f" -> {row['best_for_search']}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def chosen_step(steps: list[dict] | None) -> str:
    """The --cuda-step that trains the measured architectures' search trials fastest in sum (among
    the modes measured for all of them)."""
    rows = [r["search_training_s"] for r in steps or []]
    common = set.intersection(*(set(r) for r in rows)) if rows else set()
    total = {m: sum(r[m] for r in rows) for m in common}
    return min(total, key=total.get) if total else "eager"


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
                            "median_ms": lat.ms, "iqr_ms": lat.iqr_ms, "runs": lat.runs, "noisy": lat.noisy,
                            "images_per_s": batch / lat.ms * 1e3, "settings": s.to_dict()})
                print(f"latency {name} {size}px b{batch} {dtype}: {lat.ms:.3f} ms", flush=True)
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


class GpuSampler:
    """nvidia-smi's utilisation and memory of GPU 0, every second, in a thread."""

    def __init__(self):
        import threading

        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True,
                                      timeout=10).stdout.strip().splitlines()[0]
                util, mem = (float(v) for v in line.split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(1.0)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        util = sorted(u for u, _ in self.samples)
        return {"mean": round(statistics.mean(util), 1), "median": statistics.median(util),
                "p90": util[int(0.9 * (len(util) - 1))], "samples": len(util),
                "memory_used_mib_max": max(m for _, m in self.samples)}


def _find_idle_share(run_dir: Path) -> float | None:
    """The driver's idle share, if this version's run record has one (a key with 'idle' in it)."""
    import yaml

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if "idle" in str(k) and isinstance(v, (int, float)):
                    return float(v)
                found = walk(v)
                if found is not None:
                    return found
        return None

    for name in ("config.yaml", "run.yaml", "summary.json", "driver.json"):
        path = run_dir / name
        if path.is_file():
            found = walk(yaml.safe_load(path.read_text()))
            if found is not None:
                return found
    return None


def _worker_facts(run_dir: Path) -> dict:
    """Worker RSS, admission waits and out-of-memory retries, from the trials' user attrs."""
    import optuna

    from cspnas.run_format import open_storage

    study = optuna.load_study(study_name="cspnas", storage=open_storage(run_dir / "study.db"))
    attrs = [t.user_attrs for t in study.trials if "worker_rss_mb" in t.user_attrs]
    by_worker: dict[str, list[float]] = {}
    for a in attrs:
        by_worker.setdefault(str(a.get("worker_pid")), []).append(a["worker_rss_mb"])
    waits = sorted(a.get("admission_wait_s", 0.0) for a in attrs)
    return {"worker_rss_mb": {"max": round(max((max(v) for v in by_worker.values()), default=0), 1),
                              "workers": {w: {"trials": len(v), "first": round(v[0], 1), "last": round(v[-1], 1)}
                                          for w, v in by_worker.items()}} if attrs else None,
            "admission_wait_s": {"median": statistics.median(waits), "max": waits[-1]} if waits else None,
            "retried_alone": sum(1 for a in attrs if a.get("retried_alone"))}


def part_search(args, dataset: str, folder: Path | None, subset: int | None, device: str, cuda_step: str,
                train_images: int, clock: Clock, notes: list[str]) -> dict:
    import pandas as pd

    results = Path(tempfile.mkdtemp(prefix="gpu_check_search."))
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(args.budget), "--epochs", str(args.epochs),
           "--device", device, "--dataset", dataset, "--results-dir", str(results), "--name", "gpu",
           "--no-dashboard", "--keep-weights", "none", "--concurrency", str(args.concurrency), "--seed", "0",
           "--batch-size", str(args.batch_size), "--cpus-per-trial", str(args.cpus_per_trial)]
    if args.target_latency:
        cmd += ["--target-latency", args.target_latency]
    if device == "cuda":
        cmd += ["--cuda-step", cuda_step]
    if args.trials_per_gpu:
        cmd += ["--trials-per-gpu", str(args.trials_per_gpu)]
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
        with open(log, "w") as fh, GpuSampler() as gpu:
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
        final = trials[trials["state"].isin(["complete", "infeasible", "pruned", "failed"])] if len(trials) else trials
        images = int(trials["epochs_done"].fillna(0).sum()) * train_images if len(trials) else 0
        trained_s = float(trials["train_seconds"].fillna(0).sum()) if len(trials) else 0.0
        out = {"command": " ".join(cmd[1:]).replace(str(results), "<tmp>"), "returncode": rc, "timed_out": timed_out,
               "wall_s": round(wall, 1), "budget": args.budget, "epochs": args.epochs, "cuda_step": cuda_step,
               "trials": int(len(final)), "trials_complete": int(len(complete)),
               "states": {str(k): int(v) for k, v in trials["state"].value_counts().items()} if len(trials) else {},
               "trials_per_min": round(len(final) / wall * 60, 2),
               "train_images": images, "aggregate_images_per_s": round(images / wall, 1),
               "per_trial_images_per_s": round(images / trained_s, 1) if trained_s else None,
               "front_size": int(len(front)),
               "best_accuracy": float(complete["accuracy"].max()) if len(complete) else None,
               "median_train_s": float(complete["train_seconds"].median()) if len(complete) else None,
               "median_cost_s": float(trials["cost_seconds"].median()) if len(trials) else None,
               "gpu_util": gpu.summary(), "driver_idle_share": _find_idle_share(run_dir),
               **(_worker_facts(run_dir) if (run_dir / "study.db").is_file() else {}),
               "packing": [ln for ln in log.read_text().splitlines() if ln.startswith("packing:")],
               "rows": [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in trials[
                   ["trial", "state", "arch_summary", "accuracy", "macs", "latency_ms", "train_seconds"]
               ].to_dict("records")] if len(trials) else []}
        if out["driver_idle_share"] is None:
            notes.append("search: the run record has no driver idle share (added by another change of issue 16)")
        if rc != 0 and not timed_out:
            out["log_tail"] = log.read_text()[-3000:]
        print(f"search: {out['trials']}/{args.budget} trials ({out['trials_complete']} complete) in {wall:.0f} s, "
              f"{out['trials_per_min']} per min, {out['aggregate_images_per_s']:,.0f} img/s in aggregate, "
              f"GPU {out['gpu_util']}", flush=True)
        return out
    finally:
        shutil.rmtree(results, ignore_errors=True)


GOAL = {"trials": 200, "wall_s": 600, "aggregate_images_per_s": 75000}


def goal_met(search: dict | None) -> dict | None:
    if not search:
        return None
    return {"trials": search["trials"] >= GOAL["trials"], "wall_s": search["wall_s"] <= GOAL["wall_s"],
            "aggregate_images_per_s": search["aggregate_images_per_s"] >= GOAL["aggregate_images_per_s"]}


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
    for r in report.get("steps") or []:
        for mode, m in r["modes"].items():
            res = (f"{m['images_per_s']:,.0f} img/s, setup {m['setup_s']:.1f} s" if "error" not in m
                   else m["error"][:80])
            if mode == r["best_for_search"]:
                res += "  <- best for a search trial"
            rows.append({"part": "steps", "item": r["arch_summary"], "setting": f"--cuda-step {mode}", "result": res})
    s = report.get("search")
    if s:
        best = f"{s['best_accuracy']:.3f}" if s["best_accuracy"] is not None else "-"
        util = s["gpu_util"]["mean"] if s.get("gpu_util") else "-"
        rss = s["worker_rss_mb"]["max"] if s.get("worker_rss_mb") else "-"
        rows.append({"part": "search", "item": f"budget {s['budget']}, {s['epochs']} epochs",
                     "setting": f"--device {report['device']} --cuda-step {s['cuda_step']}",
                     "result": f"{s['trials']}/{s['budget']} trials ({s['trials_complete']} complete) in "
                               f"{s['wall_s']:.0f} s, {s['trials_per_min']}/min, "
                               f"{s['aggregate_images_per_s']:,.0f} img/s, GPU {util}%, worker RSS max {rss} MiB, "
                               f"front {s['front_size']}, best acc {best} (rc {s['returncode']})"})
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


PARTS = ("steps", "train", "latency", "search")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="steps,search", help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--data", choices=("full", "reduced"), default="full",
                    help="full CIFAR-10 (32x32) or experiments/common.py's reduced folder at --image-size")
    ap.add_argument("--data-dir", default=None, help="extracted cifar10-jpeg folder, if ../shared/data is not there")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=16, help="--data reduced: CIFAR-10 reduced to this size")
    ap.add_argument("--archs", type=int, default=3, help="default-space architectures (spread over MACs)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per search trial (and per train-part run)")
    ap.add_argument("--batch-size", type=int, default=128, help="training batch size (the search's default)")
    ap.add_argument("--repeats", type=int, default=2, help="train part: timed training runs per mode")
    ap.add_argument("--steps-images", type=int, default=10000, help="steps part: training images per epoch")
    ap.add_argument("--steps-minutes", type=float, default=2.0, help="steps part: time cap")
    ap.add_argument("--search-cuda-step", default="auto", help="auto (the steps part's winner) | eager | graph | compile")
    ap.add_argument("--budget", type=int, default=200, help="search budget")
    ap.add_argument("--target-latency", default="10ms", help="the search's --target-latency ('' for none)")
    ap.add_argument("--concurrency", type=int, default=12, help="search trials at once")
    ap.add_argument("--cpus-per-trial", type=float, default=1.0)
    ap.add_argument("--trials-per-gpu", type=int, default=None, help="default: the search's own (from memory)")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="total time budget; later parts are skipped")
    ap.add_argument("--smoke", action="store_true", help="CPU, digits, tiny sizes: exercises every code path")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "gpu_search.json")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        ap.error(f"--parts: choose from {', '.join(PARTS)}, got {args.parts!r}")

    import torch

    with warnings.catch_warnings():  # a CUDA build without a driver warns here; the line below says it all
        warnings.simplefilter("ignore")
        has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.smoke:
        print(f"gpu_check: no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
              "sees no GPU; run it on a GPU machine, or --smoke to exercise it on CPU", file=sys.stderr)
        return 2
    if args.smoke:
        args.archs, args.epochs, args.repeats, args.budget, args.concurrency = 2, 1, 1, 2, 2
        args.steps_images, args.batch_size, args.target_latency = 256, 64, "50ms"
        if "--parts" not in (argv if argv is not None else sys.argv[1:]):
            parts = list(PARTS)  # every code path
    device = "cpu" if args.smoke else "cuda"
    clock = Clock(args.max_minutes)
    # One intra-op thread, as a search trial (--cpus-per-trial 1); on a busy CPU more threads spin
    # against each other and the CPU smoke crawls. On CUDA the host threads barely matter.
    torch.set_num_threads(1)

    from cspnas.data import load_dataset
    from cspnas.space.searchspace import load_space

    dataset, folder, subset, data_note = resolve_data(args)
    data = load_dataset(dataset, folder, train_subset=subset)  # the search's split (val 0.1, seed 0)
    archs = spread_sample(load_space("default"), args.archs, in_chs=data.in_chs, num_classes=data.num_classes,
                          input_size=data.input_size, seed=0, pool=20 if args.smoke else 100)
    report: dict = {
        "benchmark": "gpu_check", "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine()),
        "settings": {"smoke": args.smoke, "parts": parts, "max_minutes": args.max_minutes, "data": data_note,
                     "image_size": None if dataset == "digits" else data.input_size,
                     "data_summary": data.summary(), "train_subset": subset, "archs": args.archs,
                     "epochs": args.epochs, "batch_size": args.batch_size, "repeats": args.repeats,
                     "steps_images": args.steps_images, "budget": args.budget, "target_latency": args.target_latency,
                     "concurrency": args.concurrency, "cpus_per_trial": args.cpus_per_trial,
                     "trials_per_gpu": args.trials_per_gpu, "modes": MODES,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "torch_threads": torch.get_num_threads()},
        "machine": machine(), "notes": [data_note] if dataset == "digits" and not args.smoke else [],
        "errors": {}, "part_seconds": {}, "goal": GOAL,
        "steps": None, "train_throughput": None, "latency": None, "search": None,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "bf16_supported": torch.cuda.is_bf16_supported()}
    train_images = (len(data.train_x) // args.batch_size) * args.batch_size  # per epoch of one trial

    def search():
        step = chosen_step(report["steps"]) if args.search_cuda_step == "auto" else args.search_cuda_step
        return part_search(args, dataset, folder, subset, device, step, train_images, clock, report["notes"])

    run = {"steps": lambda: part_steps(archs, data, device, args, clock, report["notes"]),
           "train": lambda: part_train(archs, data, device, args.epochs, args.repeats, clock, report["notes"]),
           "latency": lambda: part_latency(archs, device, args.smoke, clock, report["notes"]),
           "search": search}
    names = {"train": "train_throughput"}
    for part in (p for p in PARTS if p in parts):
        name = names.get(part, part)
        if clock.left() <= 0:
            report["notes"].append(f"{name}: skipped, the {args.max_minutes:g}-minute budget was spent")
            continue
        t0 = time.monotonic()
        try:
            report[name] = run[part]()
        except Exception:
            report["errors"][name] = traceback.format_exc()
            print(f"gpu_check: part {name} failed:\n{report['errors'][name]}", file=sys.stderr, flush=True)
        report["part_seconds"][name] = round(time.monotonic() - t0, 1)
        if device == "cuda":
            torch.cuda.empty_cache()
        write_json(args.out, report)  # partial results survive a later crash or kill
    report["goal_met"] = goal_met(report["search"])
    report["wall_s"] = round(clock.elapsed(), 1)
    report["table"] = table_rows(report)
    write_json(args.out, report)
    print(f"\nGPU check on {report['device_name']} ({device}), {report['wall_s']:.0f} s")
    print_table(report["table"])
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"goal {GOAL}: {report['goal_met']}")
    print(f"-> {args.out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
