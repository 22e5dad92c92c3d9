"""Per-call wall times -> the recorded latency: the one place the latency statistic is defined.

Every backend times single calls with `time_calls` and summarizes them with `summarize`, so
"latency" means the same thing whatever ran the model. Add a statistic by adding a row to
STATISTICS.

Why the default is the fastest call, not the median: on a shared machine another tenant's work
only ever slows a call down (a call cannot run faster than the model's own cost), and it comes in
bursts that can cover a whole 0.1 s measurement. Measured here (experiments/latency_statistic.py,
results/benchmarks/latency_statistic.json, ONNX Runtime, 16 archs, 3 fresh processes x 6 passes): one
0.1 s measurement against a 0.5 s re-timing of the same file in another process differs by a median
3.0% and a 90th percentile of 13% when both are medians, 1.4% / 7.2% for the 10th percentile and
1.0% / 5.5% for the fastest call (which reads +0.9% high at 0.1 s: fewer calls, fewer chances); two
0.1 s passes agree within 10% for 77% / 91% / 93% of them.
The fastest call sits ~5% below the median on this noisy VM, less on a quiet device. Choose
"median" (`--latency-statistic median`) when the interference is part of what you ship into.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from cspnas.cost.backends import Timing

# name -> (what it is, in words; the function of the per-call times in seconds)
STATISTICS: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "min": ("fastest per-call wall time", lambda t: float(np.min(t))),
    "p10": ("10th percentile of the per-call wall times", lambda t: float(np.quantile(t, 0.10))),
    "median": ("median of the per-call wall times", lambda t: float(np.median(t))),
}
DEFAULT_STATISTIC = "min"
MIN_CALLS = 10  # timed calls taken whatever the budget: a quantile of fewer says little


def time_calls(call: Callable[[], object], warmup: int, min_run_time_s: float,
               sync: Callable[[], None] | None = None) -> np.ndarray:
    """Wall time (s) of each of the calls `call()` made until `min_run_time_s` is spent (at least
    MIN_CALLS), after `warmup` untimed calls (at least one). `sync` (e.g. CUDA synchronize) ends
    each call, so a call's time is its latency, not its launch."""
    for _ in range(max(warmup, 1)):
        call()
    if sync is not None:
        sync()
    times: list[float] = []
    clock = time.perf_counter
    deadline = clock() + min_run_time_s
    while len(times) < MIN_CALLS or clock() < deadline:
        start = clock()
        call()
        if sync is not None:
            sync()
        times.append(clock() - start)
    return np.asarray(times)


def summarize(times: np.ndarray, statistic: str) -> Timing:
    """The Timing of per-call wall times (s): `statistic` of them, their IQR, count and noise flag."""
    q1, median, q3 = statistics.quantiles(times.tolist(), n=4)
    return Timing(ms=STATISTICS[statistic][1](times) * 1e3, iqr_ms=(q3 - q1) * 1e3, runs=len(times),
                  noisy=(q3 - q1) > 0.1 * median)  # torch.utils.benchmark's own noise rule
