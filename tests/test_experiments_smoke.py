"""Experiment scripts run end to end in their tiny --smoke mode (real code, tiny data)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_train_throughput_smoke(tmp_path: Path):
    out = tmp_path / "bench.json"
    proc = run_script("bench_train_throughput.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["dataset"] == "digits" and report["settings"]["epochs"] == 1
    for loop in ("cspnas", "conventional"):
        assert report[loop]["images_per_s"] > 0
        assert 0.0 <= report[loop]["final_val_acc"] <= 1.0
    ratio = report["cspnas"]["images_per_s"] / report["conventional"]["images_per_s"]
    assert abs(report["ratio_images_per_s"] - ratio) < 1e-9
    assert report["machine"]["cpu_count"] >= 1


def test_cost_benchmark_smoke(tmp_path: Path):
    out = tmp_path / "cost.json"
    proc = run_script("bench_cost.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(out.read_text())["groups"]
    for g in groups.values():
        assert g["n"] == 2 and 0 < g["median_build_s"] <= g["median_total_s"] <= g["max_total_s"]


@pytest.mark.slow
def test_search_overhead_smoke(tmp_path: Path):
    out = tmp_path / "overhead.json"
    proc = run_script("bench_search_overhead.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["search"]["trials"] == r["bare_optuna_loop"]["trials"] == 3
    assert r["infeasible"]["trained"] == 0 and r["infeasible"]["infeasible"] == r["infeasible"]["trials"]
    assert r["search"]["trial_compute_s"] == pytest.approx(r["search"]["train_s"] + r["search"]["cost_s"])
