"""Host memory of reused Ray trial workers over a long search: does a worker's RSS stay flat?

A 200-trial search on the bundled digits (300 training images, 1 epoch, 2 trials at a time, CPU) through the CLI in a
subprocess. Every 0.5 s the RSS of each Ray trial worker process (the search's children named
``ray::ImplicitFunc`` / ``ray::train_candidate``) is sampled with psutil; at the end the trials'
own ``worker_rss_mb`` user attrs (sampled by the trainable at every report) are read from
study.db when the code under test records them. Reported per worker: RSS after its first trial
sample, at the end, the maximum, and the growth per 100 trials it trained. A worker's RSS includes its
children's: with ``--worker-trials N`` its trials train in a trainer process it replaces every N trials.

    flock /tmp/cspnas-bench.lock python experiments/worker_rss.py --label after
    # the same for a checkout of the code before the fix, e.g. a `git archive` of that commit:
    PYTHONPATH=/tmp/before flock /tmp/cspnas-bench.lock python experiments/worker_rss.py --label before

Each --label is merged into one JSON (results/benchmarks/worker_rss.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, machine, write_json


def _workers(root: int) -> list:
    import psutil

    try:
        kids = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            name = " ".join(p.cmdline())[:80]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if name.startswith("ray::") and ("ImplicitFunc" in name or "train_candidate" in name):
            out.append(p)
    return out


def _family_rss_mb(p) -> float:
    """RSS of a Ray worker plus its children: with --worker-trials the trials train in a trainer process
    the worker starts (cspnas/search/worker.py), and that process's memory is the worker's too."""
    import psutil

    total = p.memory_info().rss
    for kid in p.children(recursive=True):
        try:
            total += kid.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def sample(root: int, stop: threading.Event, into: dict[int, list]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        for p in _workers(root):
            try:
                into.setdefault(p.pid, []).append((round(time.monotonic() - t0, 1), _family_rss_mb(p)))
            except Exception:
                pass
        stop.wait(0.5)


def trial_attrs(run_dir: Path) -> list[dict]:
    import optuna

    from cspnas.run_format import open_storage

    study = optuna.load_study(study_name="cspnas", storage=open_storage(run_dir / "study.db"))
    return [{"trial": t.number, "pid": t.user_attrs.get("worker_pid"), "rss_mb": t.user_attrs.get("worker_rss_mb")}
            for t in study.trials if t.user_attrs.get("worker_rss_mb") is not None]


def summarize(samples: dict[int, list], attrs: list[dict]) -> dict:
    per_worker = {}
    for pid, series in samples.items():
        rss = [r for _, r in series]
        if len(rss) < 4:
            continue
        trained = sum(1 for a in attrs if a["pid"] == pid)
        row = {"samples": len(rss), "first_mb": round(rss[min(2, len(rss) - 1)], 1), "last_mb": round(rss[-1], 1),
               "max_mb": round(max(rss), 1), "seconds": series[-1][0] - series[0][0],
               # the largest RSS in each quarter of the run: flat when memory is bounded, rising when it creeps
               "max_mb_by_quarter": [round(max(rss[len(rss) * q // 4:max(len(rss) * (q + 1) // 4, 1)]), 1)
                                     for q in range(4)]}
        by_trial = [a["rss_mb"] for a in sorted(attrs, key=lambda a: a["trial"]) if a["pid"] == pid]
        if by_trial:
            row.update(trials=trained, first_trial_mb=round(by_trial[0], 1), last_trial_mb=round(by_trial[-1], 1),
                       growth_mb_per_100_trials=round((by_trial[-1] - by_trial[0]) / max(1, trained - 1) * 100, 1))
        per_worker[str(pid)] = row
    return per_worker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="name of this measurement, e.g. before / after")
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop the search (Ctrl-C: it records what finished) after this long; the summary covers "
                         "the trials done by then")
    ap.add_argument("--worker-trials", type=int, default=None, help="pass --worker-trials N to the search (trials "
                    "train in a trainer process each worker replaces every N trials; RSS then counts worker + trainer)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "worker_rss.json")
    args = ap.parse_args(argv)

    code = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or str(REPO)
    results = Path(tempfile.mkdtemp(prefix="worker_rss."))
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", str(args.budget), "--epochs", "1",
           "--dataset", "digits", "--train-subset", "300", "--device", "cpu", "--concurrency", str(args.concurrency), "--sampler", "random",
           "--results-dir", str(results), "--name", "rss", "--no-dashboard", "--keep-weights", "none", "--seed", "0"]
    if args.worker_trials is not None:
        cmd += ["--worker-trials", str(args.worker_trials)]
    samples: dict[int, list] = {}
    stop = threading.Event()
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler = threading.Thread(target=sample, args=(proc.pid, stop, samples), daemon=True)
        sampler.start()
        stopped = False
        try:
            _, err = proc.communicate(timeout=args.max_minutes * 60 if args.max_minutes else None)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # the search interrupts its trials and writes its tables
            _, err = proc.communicate()
            stopped = True
        stop.set()
        sampler.join()
        wall = time.monotonic() - t0
        if proc.returncode != 0 and not stopped:
            print(err[-3000:], file=sys.stderr)
            return 1
        attrs = trial_attrs(results / "rss")
        workers = summarize(samples, attrs)
    finally:
        shutil.rmtree(results, ignore_errors=True)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "worker_rss", "runs": {}}
    commit = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    report["runs"][args.label] = {"code": commit.stdout.strip() or code, "command": " ".join(cmd[1:]).replace(
        str(results), "<tmp>"), "wall_s": round(wall, 1), "stopped_at_max_minutes": stopped,
        "trials_with_rss": len(attrs), "workers": workers,
        "max_rss_mb": max((w["max_mb"] for w in workers.values()), default=None), "machine": machine()}
    write_json(args.out, report)
    print(json.dumps(report["runs"][args.label]["workers"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
