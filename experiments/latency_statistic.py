"""Which statistic of single-call times makes a latency you can measure again? (the choice behind
cspnas.cost.timing.DEFAULT_STATISTIC)

``--archs`` architectures of the default space spread over MACs, at 3x32x32, batch 1, one thread,
are timed with both backends (torch eager; the exported ONNX in ONNX Runtime) by cspnas's own
call loop (cost.timing.time_calls) in ``--processes`` fresh processes, one after another; each
process makes ``--passes`` interleaved passes (every other one reversed) of ``--seconds`` per
model and keeps every call's time. For each statistic in cost.timing.STATISTICS it reports:

* ``recorded_vs_retimed``: one ``--seconds`` pass (what a search records for a candidate) against
  the same file re-timed for ``--passes - 1`` passes' worth of calls in another process (the check
  of issue 12): median and 90th percentile of the absolute relative error;
* ``pass_to_pass``: two single passes in the same process; ``within_10pct`` is the share of pairs
  that agree within 10% (the ceiling a latency predictor can reach against single timings);
* ``over_median``: the statistic over the median of the same calls (how far below the median it
  sits).

    python experiments/latency_statistic.py        # results/benchmarks/latency_statistic.json
    python experiments/latency_statistic.py --smoke --out /tmp/s.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine, spread_sample, write_json

BACKENDS = ("torch", "onnxruntime")


def worker(jobs_path: Path, passes: int, seconds: float) -> dict:
    """In a fresh process: every model of every backend timed in `passes` interleaved passes;
    {backend: [[per-call seconds of pass p] for p] per model}."""
    import numpy as np
    import torch

    from cspnas.cost._runtime import torch_threads
    from cspnas.cost.onnx_runtime import session
    from cspnas.cost.timing import time_calls
    from cspnas.models import build_model
    from cspnas.space import ArchConfig

    jobs = json.loads(jobs_path.read_text())
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls = {"torch": [], "onnxruntime": []}
    for job in jobs:
        torch.manual_seed(0)
        model = build_model(ArchConfig.from_json(job["arch"])).eval()
        calls["torch"].append(lambda m=model: m(x))
        sess = session(job["onnx"], threads=1)
        calls["onnxruntime"].append(lambda s=sess: s.run(None, {"input": x.numpy()}))
    out = {b: [[] for _ in jobs] for b in BACKENDS}
    with torch.inference_mode(), torch_threads(1):
        for p in range(passes):
            order = list(range(len(jobs)))
            for i in reversed(order) if p % 2 else order:
                for b in BACKENDS:
                    out[b][i].append(time_calls(calls[b][i], 3, seconds).tolist())
    del np
    return out


def analyse(runs: list[dict], statistics: dict) -> dict:
    import numpy as np

    def q(errors: list[float]) -> dict:
        e = np.abs(np.array(errors))
        return {"median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)), "max": float(e.max()),
                "median_signed": float(np.median(errors)),
                "within_10pct": float(np.mean(e <= 0.10)), "n": len(e)}

    report = {}
    for b in BACKENDS:
        report[b] = {}
        models = range(len(runs[0][b]))
        passes = len(runs[0][b][0])
        for name, (_, f) in statistics.items():
            stat = lambda t: f(np.asarray(t))  # noqa: E731
            retimed, pairs, below = [], [], []
            for one, other in itertools.permutations(runs, 2):
                for m in models:
                    for p in range(passes):  # pass p recorded, the other process's other passes re-timed
                        rest = np.concatenate([other[b][m][k] for k in range(passes) if k != p])
                        retimed.append(stat(one[b][m][p]) / stat(rest) - 1)
            for run in runs:
                for m in models:
                    for p, k in itertools.combinations(range(passes), 2):
                        pairs.append(stat(run[b][m][k]) / stat(run[b][m][p]) - 1)
                    below += [stat(t) / float(np.median(t)) for t in run[b][m]]
            report[b][name] = {"recorded_vs_retimed": q(retimed), "pass_to_pass": q(pairs),
                               "over_median": float(np.median(below))}
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=16)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=0.1, help="one pass per model, s (a search's budget)")
    ap.add_argument("--smoke", action="store_true", help="3 archs, 2 processes, 3 passes of 0.02 s")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "latency_statistic.json")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.passes, args.seconds)))
        return {}
    if args.smoke:
        args.archs, args.processes, args.passes, args.seconds = 3, 2, 3, 0.02

    import torch

    from cspnas.cost import LatencySettings
    from cspnas.cost.onnx_runtime import deploy_bytes
    from cspnas.cost.timing import STATISTICS
    from cspnas.models import build_model
    from cspnas.space.searchspace import load_space

    t_start = time.monotonic()
    archs = spread_sample(load_space("default"), args.archs, in_chs=3, num_classes=10, input_size=32, pool=400)
    runs = []
    with tempfile.TemporaryDirectory(prefix="latency_statistic.") as tmp:
        jobs = []
        for i, arch in enumerate(archs):
            torch.manual_seed(0)
            path = Path(tmp) / f"{i}.onnx"
            path.write_bytes(deploy_bytes(build_model(arch), LatencySettings(backend="onnxruntime")))
            jobs.append({"arch": arch.to_json(), "onnx": str(path)})
        (Path(tmp) / "jobs.json").write_text(json.dumps(jobs))
        for k in range(args.processes):
            proc = subprocess.run([sys.executable, __file__, "--worker", str(Path(tmp) / "jobs.json"),
                                   "--passes", str(args.passes), "--seconds", str(args.seconds)],
                                  capture_output=True, text=True, timeout=3600, check=True)
            runs.append(json.loads(proc.stdout))
            print(f"process {k + 1}/{args.processes} done", file=sys.stderr)
    report = {"settings": {"archs": args.archs, "processes": args.processes, "passes": args.passes,
                           "seconds": args.seconds, "input": [1, 3, 32, 32], "threads": 1, "smoke": args.smoke},
              "machine": machine(),
              "statistics": {name: words for name, (words, _) in STATISTICS.items()},
              "results": analyse(runs, STATISTICS),
              "wall_s": round(time.monotonic() - t_start, 1)}
    write_json(args.out, report)
    for b in BACKENDS:
        for name, r in report["results"][b].items():
            rr, pp = r["recorded_vs_retimed"], r["pass_to_pass"]
            print(f"{b:12s} {name:7s} recorded vs re-timed: median {rr['median']:.1%} p90 {rr['p90']:.1%} | "
                  f"pass to pass within 10%: {pp['within_10pct']:.0%} | over median {r['over_median']:.3f}")
    return report


if __name__ == "__main__":
    main()
