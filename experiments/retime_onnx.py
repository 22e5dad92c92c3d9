"""Re-time exported ONNX files with plain ONNX Runtime (no cspnas import), as a deployment would.

    python experiments/retime_onnx.py JOBS.json [--seconds 0.5]

JOBS.json is a list of {"model": path, "backend_info": a trial's `latency_backend` record
(trials.csv), "shape": [N, C, H, W]}; each model is timed under the recorded session options and
warm-up and summarized by the recorded statistic (a low quantile or the median of the per-call times;
records without one were medians). Prints a JSON list of {"model", "ms", "statistic", "runs"}. Run it as a fresh process, so
nothing of the search (its imports, threads, allocator state) is shared with the measurement.

The session-option and timing code repeats cspnas/cost/onnx_runtime.py on purpose: this script is the
independent check of that module, so it must not import it (a shared bug would agree with itself).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

EXECUTION_MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
STATISTICS = {"p10": lambda t: float(np.quantile(t, 0.10)), "median": lambda t: float(np.median(t)),
              "min": lambda t: float(np.min(t))}
OPTIMIZATION = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}


def retime(model: str, info: dict, shape: list[int], seconds: float) -> dict:
    opts = info["session"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts["intra_op_num_threads"]
    so.inter_op_num_threads = opts["inter_op_num_threads"]
    so.execution_mode = EXECUTION_MODES[opts["execution_mode"]]
    so.graph_optimization_level = OPTIMIZATION[opts["graph_optimization_level"]]
    sess = ort.InferenceSession(model, sess_options=so, providers=opts["providers"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
    for _ in range(max(1, info.get("options", {}).get("warmup", 3))):
        sess.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 10 or time.perf_counter() < deadline:
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    statistic = info.get("statistic", "median")
    return {"model": model, "ms": STATISTICS[statistic](times) * 1e3, "statistic": statistic, "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs")
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    with open(args.jobs) as f:
        jobs = json.load(f)
    print(json.dumps([retime(j["model"], j["backend_info"], j["shape"], args.seconds) for j in jobs]))


if __name__ == "__main__":
    main()
