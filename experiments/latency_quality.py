"""Latency measurement quality: how repeatable are the search's latency numbers, alone and next to training?

Takes ``--archs`` architectures from the default search space spread over MACs (see
experiments/common.py spread_sample) and measures each one's forward latency with the search's
default settings (cpu, batch 1, 1 thread, float32, 0.1 s timing budget, 3x32x32 input) under
three conditions, run one after another:

* ``quiet``: nothing else of ours runs (other processes on the machine still count: see the
  load averages recorded before and after each condition);
* ``loaded``: ``--load-jobs`` training processes (default: one per core, like a search with
  --concurrency = cores; each cspnas.train.train of a small CNN on the bundled digits data,
  torch threads 1, epoch after epoch until killed) run while we measure;
* ``loaded_gated``: the same jobs, but they share a MeasureGate and call its trainer pass
  between steps, and every measure_latency call runs inside ``gate.exclusive()``: exactly how
  ``cspnas search`` measures candidates while trials train.

Each condition makes two full passes over the architectures, each pass in its own shuffled
order. Reported per condition: the median and 90th percentile of the relative IQR
(iqr_ms / median_ms) over all measurements, the fraction benchmark flagged noisy, Spearman and
Kendall between the two passes' medians, the median |pass1 - pass2| / pass1, and the bias from
load: the median over architectures of (this condition's mean latency / quiet's). With a
training job running, the trainer's steps per second while we measure is recorded too (in the
gated condition it shows how much training the gate holds back).

    python experiments/latency_quality.py                 # results/benchmarks/latency_quality.json
    python experiments/latency_quality.py --smoke --out /tmp/l.json
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import REPO, kendall, machine, spearman, spread_sample, write_json

CONDITIONS = ("quiet", "loaded", "loaded_gated")


# -- the load: a training job in its own process ---------------------------------------------------

def load_worker(ready: Path, status: Path, gate_dir: str | None, max_seconds: float) -> None:
    """Train a small CNN on digits with one thread, epoch after epoch, until killed (or max_seconds).

    Writes ``ready`` after its first optimizer step and the running step count to ``status``
    (at most every 0.5 s). Exits by itself if its parent dies or after ``max_seconds``.
    """
    import torch
    from torch import nn

    from cspnas.data import load_dataset
    from cspnas.search.gate import MeasureGate
    from cspnas.train import TrainConfig, train

    torch.set_num_threads(1)
    parent, started = os.getppid(), time.monotonic()
    data = load_dataset("digits")
    torch.manual_seed(0)

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    model = nn.Sequential(*block(data.in_chs, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, data.num_classes))
    state = {"steps": 0, "written": 0.0}

    def count_step() -> None:
        state["steps"] += 1
        now = time.monotonic()
        if state["steps"] == 1:
            ready.write_text(str(os.getpid()))
        if now - state["written"] >= 0.5:
            state["written"] = now
            tmp = status.with_suffix(".tmp")
            tmp.write_text(f"{state['steps']} {time.time():.3f}")
            os.replace(tmp, status)
            if os.getppid() != parent or now - started > max_seconds:
                os._exit(0)  # orphaned or overdue: never outlive the experiment

    gate = MeasureGate(gate_dir) if gate_dir else None
    with gate.training() if gate is not None else contextlib.nullcontext() as gate_pass:
        def hook() -> None:
            count_step()
            if gate_pass is not None:
                gate_pass.checkpoint()

        epoch = 0
        while True:
            train(model, data, TrainConfig(epochs=1, seed=epoch, device="cpu"), step_hook=hook)
            epoch += 1


class LoadJob:
    """The training job as a context manager: started, confirmed training, and always killed."""

    def __init__(self, workdir: Path, gate_dir: Path | None, max_seconds: float, ready_timeout_s: float = 120.0):
        self.workdir, self.gate_dir = workdir, gate_dir
        self.ready, self.status, self.log = workdir / "ready", workdir / "status", workdir / "worker.log"
        self.max_seconds, self.ready_timeout_s = max_seconds, ready_timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LoadJob:
        for f in (self.ready, self.status):
            f.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--load-worker", "--ready", str(self.ready),
               "--status", str(self.status), "--max-seconds", str(self.max_seconds)]
        if self.gate_dir is not None:
            cmd += ["--gate-dir", str(self.gate_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + self.ready_timeout_s
            while not self.ready.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"training job exited with code {self.proc.returncode} before its first "
                                       f"step:\n{self.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"training job made no step in {self.ready_timeout_s:.0f} s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def steps(self) -> tuple[int, float] | None:
        """(steps so far, wall time written); None before the first status write."""
        try:
            n, t = self.status.read_text().split()
            return int(n), float(t)
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __exit__(self, *exc) -> None:
        self.stop()


# -- measuring ---------------------------------------------------------------------------------------

def measure_pass(models: dict, order: list[str], settings, gate) -> dict[str, dict]:
    from cspnas.cost import measure_latency

    out = {}
    for h in order:
        with gate.exclusive() if gate is not None else contextlib.nullcontext():
            lat = measure_latency(models[h], settings)
        out[h] = {"median_ms": lat.ms, "iqr_ms": lat.iqr_ms, "runs": lat.runs, "noisy": lat.noisy}
    return out


def two_orders(hashes: list[str], seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    first = hashes[:]
    rng.shuffle(first)
    second = first[:]
    while len(second) > 1 and second == first:  # a different order, not just a different seed
        rng.shuffle(second)
    return first, second


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def summarize(passes: list[dict[str, dict]], hashes: list[str]) -> dict:
    rel_iqr = [p[h]["iqr_ms"] / p[h]["median_ms"] for p in passes for h in hashes]
    noisy = [p[h]["noisy"] for p in passes for h in hashes]
    m1 = [passes[0][h]["median_ms"] for h in hashes]
    m2 = [passes[1][h]["median_ms"] for h in hashes]
    return {"measurements": len(rel_iqr),
            "rel_iqr_median": statistics.median(rel_iqr), "rel_iqr_p90": percentile(rel_iqr, 90),
            "noisy_fraction": sum(noisy) / len(noisy),
            "spearman_pass1_pass2": spearman(m1, m2), "kendall_pass1_pass2": kendall(m1, m2),
            "median_abs_rel_diff_pass1_pass2": statistics.median(abs(a - b) / a for a, b in zip(m1, m2)),
            "median_latency_ms": statistics.median(m1 + m2)}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=30)
    ap.add_argument("--pool", type=int, default=400, help="random draws that the archs are spread over")
    ap.add_argument("--min-run-time", type=float, default=0.1, help="timing budget per measurement, s "
                    "(the search's default latency_min_run_time_s)")
    ap.add_argument("--seed", type=int, default=0, help="architecture draw and pass orders")
    ap.add_argument("--load-jobs", type=int, default=os.cpu_count() or 1,
                    help="training processes (1 thread each) in the loaded conditions; default one per core, "
                         "as a search with --concurrency = cores")
    ap.add_argument("--smoke", action="store_true", help="4 archs from a pool of 20, 0.02 s timing budget")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "latency_quality.json")
    # the training job runs this script again with these (not for direct use)
    ap.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--status", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gate-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=3600.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load_worker:
        load_worker(args.ready, args.status, args.gate_dir, args.max_seconds)
        return {}
    if args.smoke:
        args.archs, args.pool, args.min_run_time = 4, 20, 0.02

    import torch

    from cspnas.cost import LatencySettings, count_macs, count_params
    from cspnas.models import build_model
    from cspnas.search.gate import MeasureGate
    from cspnas.space.searchspace import load_space

    torch.set_num_threads(1)  # our own side work (MAC counting) stays on one core; timing sets its own
    t_start = time.monotonic()
    archs = spread_sample(load_space("default"), args.archs, in_chs=3, num_classes=10, input_size=32,
                          seed=args.seed, pool=args.pool)
    settings = replace(LatencySettings(in_chs=3, input_size=32), min_run_time_s=args.min_run_time)
    models, info = {}, {}
    for arch in archs:
        h = arch.arch_hash()
        torch.manual_seed(0)  # as the search's CostMeter
        models[h] = build_model(arch)
        info[h] = {"arch_hash": h, "arch_summary": arch.summary(), "params": count_params(models[h]),
                   "macs": count_macs(models[h], in_chs=3, input_size=32).total}
    hashes = list(models)
    # ~ worst-case duration of all measurements, for the training job's own kill switch
    job_limit_s = 600 + 20 * len(hashes) * (args.min_run_time + 0.5) * 2 * len(CONDITIONS)

    conditions: dict[str, dict] = {}
    passes: dict[str, list[dict]] = {}
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the training job is killed in both cases
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    with tempfile.TemporaryDirectory(prefix="latency_quality.") as tmp:
        for ci, name in enumerate(CONDITIONS):
            orders = two_orders(hashes, args.seed * 1000 + ci)
            load_before = os.getloadavg()
            t0 = time.monotonic()
            job_steps = None
            if name == "quiet":
                passes[name] = [measure_pass(models, o, settings, None) for o in orders]
            else:
                gated = name == "loaded_gated"
                gate_dir = Path(tmp) / name / "locks" if gated else None  # one gate, as in a search
                with contextlib.ExitStack() as stack:
                    jobs = []
                    for i in range(args.load_jobs):
                        workdir = Path(tmp) / name / f"job{i}"
                        workdir.mkdir(parents=True)
                        jobs.append(stack.enter_context(LoadJob(workdir, gate_dir, job_limit_s)))
                    time.sleep(0.6)  # let the first status lines land
                    s0, m0 = [job.steps() for job in jobs], time.time()
                    gate = MeasureGate(gate_dir) if gated else None
                    passes[name] = [measure_pass(models, o, settings, gate) for o in orders]
                    time.sleep(0.6)
                    s1, m1 = [job.steps() for job in jobs], time.time()
                    for job in jobs:
                        if not job.alive():
                            raise RuntimeError(f"training job died during {name}:\n{job.log.read_text()[-2000:]}")
                if all(s0) and all(s1):
                    steps = sum(b[0] - a[0] for a, b in zip(s0, s1))
                    seconds = statistics.mean(b[1] - a[1] for a, b in zip(s0, s1))
                    job_steps = {"jobs": len(jobs), "steps": steps, "seconds": round(seconds, 2),
                                 "steps_per_s": round(steps / seconds, 1) if seconds > 0 else None,
                                 "measuring_seconds": round(m1 - m0, 2)}
            summary = summarize(passes[name], hashes)
            summary.update({"wall_s": round(time.monotonic() - t0, 2),
                            "load_avg_before": [round(x, 2) for x in load_before],
                            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                            "pass_orders": [list(o) for o in orders], "training_job": job_steps})
            conditions[name] = summary
            print(f"{name:>13}: rel IQR median {summary['rel_iqr_median']:.3f} p90 {summary['rel_iqr_p90']:.3f}, "
                  f"noisy {summary['noisy_fraction']:.0%}, pass1 vs pass2 spearman "
                  f"{summary['spearman_pass1_pass2']:.3f} kendall {summary['kendall_pass1_pass2']:.3f}, "
                  f"median |diff| {summary['median_abs_rel_diff_pass1_pass2']:.1%}"
                  + (f", trainer {job_steps['steps_per_s']} steps/s" if job_steps else ""), flush=True)

    quiet_mean = {h: statistics.mean(p[h]["median_ms"] for p in passes["quiet"]) for h in hashes}
    for name in CONDITIONS:
        ratios = [statistics.mean(p[h]["median_ms"] for p in passes[name]) / quiet_mean[h] for h in hashes]
        conditions[name]["bias_vs_quiet_median_ratio"] = statistics.median(ratios)
        conditions[name]["median_latency_ratio_vs_quiet"] = (conditions[name]["median_latency_ms"]
                                                             / conditions["quiet"]["median_latency_ms"])
    rows = []
    for h in hashes:
        row = dict(info[h])
        for name in CONDITIONS:
            row[name] = {key: [p[h][key] for p in passes[name]] for key in ("median_ms", "iqr_ms", "runs", "noisy")}
        rows.append(row)

    report = {
        "benchmark": "latency_quality",
        "settings": {"archs": len(hashes), "requested_archs": args.archs, "pool": args.pool, "seed": args.seed,
                     "space": "default", "smoke": args.smoke, "conditions": list(CONDITIONS),
                     "passes_per_condition": 2, "latency": settings.to_dict(),
                     "load_jobs": args.load_jobs,
                     "load_job": "separate processes (--load-jobs): cspnas.train.train of a 3-conv CNN on digits, "
                                 "torch threads 1 each, epoch after epoch; loaded_gated: they share one MeasureGate "
                                 "and call its pass every step, and each measure_latency runs inside "
                                 "gate.exclusive() (the search's mode)",
                     "wall_s": round(time.monotonic() - t_start, 1)},
        "machine": machine(),
        "conditions": conditions,
        "rows": rows,
    }
    write_json(args.out, report)
    print("bias vs quiet (median ratio): " + ", ".join(
        f"{n} {conditions[n]['bias_vs_quiet_median_ratio']:.2f}x" for n in CONDITIONS) + f" -> {args.out}")
    return report


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as e:
        sys.exit(f"interrupted ({str(e) or 'Ctrl-C'}); the training job was stopped, nothing written")
