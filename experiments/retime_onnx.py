"""Re-time an exported ONNX file with plain ONNX Runtime (no cspnas import), as a deployment would.

    python experiments/retime_onnx.py MODEL.onnx BACKEND_INFO_JSON [--shape 1,3,32,32] [--seconds 0.5]

BACKEND_INFO_JSON is a trial's `latency_backend` record (trials.csv): its session options and
warm-up are used. Prints the median per-call milliseconds. Run in a fresh process, so nothing of
the search (its imports, threads, allocator state) is shared with the measurement.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("backend_info")
    parser.add_argument("--shape", default="1,3,32,32")
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    info = json.loads(args.backend_info)
    opts = info["session"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts["intra_op_num_threads"]
    so.inter_op_num_threads = opts["inter_op_num_threads"]
    so.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                         "parallel": ort.ExecutionMode.ORT_PARALLEL}[opts["execution_mode"]]
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[opts["graph_optimization_level"]]
    sess = ort.InferenceSession(args.model, sess_options=so, providers=opts["providers"])
    x = np.random.default_rng(0).standard_normal([int(d) for d in args.shape.split(",")], dtype=np.float32)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(max(1, info.get("options", {}).get("warmup", 3))):
        sess.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + args.seconds
    while len(times) < 10 or time.perf_counter() < deadline:
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    print(json.dumps({"median_ms": statistics.median(times) * 1e3, "runs": len(times),
                      "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
