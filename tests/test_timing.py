"""The latency statistic (cspnas.cost.timing): what single-call times become, in one place."""
from __future__ import annotations

import numpy as np
import pytest

from cspnas.cost.timing import DEFAULT_STATISTIC, MIN_CALLS, STATISTICS, summarize, time_calls


def test_time_calls_warms_up_then_times_at_least_min_calls():
    calls, synced = [], []
    times = time_calls(lambda: calls.append(1), warmup=3, min_run_time_s=0.0, sync=lambda: synced.append(1))
    assert len(times) == MIN_CALLS and len(calls) == 3 + MIN_CALLS
    assert len(synced) == 1 + MIN_CALLS  # after the warm-up, then after every timed call
    assert (times >= 0).all()


def test_time_calls_spends_the_budget():
    import time

    start = time.perf_counter()
    times = time_calls(lambda: None, warmup=0, min_run_time_s=0.05)
    assert time.perf_counter() - start >= 0.05 and len(times) > MIN_CALLS


def test_a_burst_moves_the_median_not_the_low_quantile():
    # 60 calls at 1 ms, then a 40-call burst at 2 ms (another tenant): the median lands in the burst's
    # pull, the 10th percentile stays on the model's own cost
    times = np.array([1e-3] * 60 + [2e-3] * 40)
    p10, median, fastest = (summarize(times, name) for name in ("p10", "median", "min"))
    assert p10.ms == pytest.approx(1.0) and fastest.ms == pytest.approx(1.0) and median.ms == pytest.approx(1.0)
    times = np.array([1e-3] * 45 + [2e-3] * 55)
    assert summarize(times, "median").ms == pytest.approx(2.0) and summarize(times, "p10").ms == pytest.approx(1.0)
    assert summarize(times, DEFAULT_STATISTIC).runs == 100 and summarize(times, "p10").noisy  # IQR 1 ms > 10%


def test_every_statistic_is_a_quantile_of_the_calls():
    times = np.random.default_rng(0).lognormal(0, 0.3, 200) * 1e-3
    for name in STATISTICS:
        assert times.min() * 1e3 <= summarize(times, name).ms <= times.max() * 1e3
    assert summarize(times, "min").ms <= summarize(times, "p10").ms <= summarize(times, "median").ms
