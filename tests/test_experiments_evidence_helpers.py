"""experiments/latency_quality.py and experiments/gpu_check.py run end to end in --smoke mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_latency_quality_smoke(tmp_path: Path):
    out = tmp_path / "x.json"
    proc = run_script("latency_quality.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["settings"]["latency"]["device"] == "cpu" and r["settings"]["latency"]["threads"] == 1
    assert r["settings"]["latency"]["min_run_time_s"] == 0.02
    hashes = {row["arch_hash"] for row in r["rows"]}
    assert len(hashes) == len(r["rows"]) == r["settings"]["archs"] >= 3
    assert list(r["conditions"]) == ["quiet", "loaded", "loaded_gated"]
    for name, c in r["conditions"].items():
        first, second = c["pass_orders"]
        assert set(first) == set(second) == hashes and first != second  # two full passes, reordered
        assert c["measurements"] == 2 * len(hashes)
        assert 0 <= c["rel_iqr_median"] <= c["rel_iqr_p90"]
        assert 0 <= c["noisy_fraction"] <= 1
        assert -1 <= c["spearman_pass1_pass2"] <= 1 and -1 <= c["kendall_pass1_pass2"] <= 1
        assert c["median_abs_rel_diff_pass1_pass2"] >= 0 and c["bias_vs_quiet_median_ratio"] > 0
        assert len(c["load_avg_before"]) == len(c["load_avg_after"]) == 3
        if name == "quiet":
            assert c["training_job"] is None and c["bias_vs_quiet_median_ratio"] == pytest.approx(1.0)
        else:
            assert c["training_job"]["steps"] > 0  # the load really trained while we measured
    for row in r["rows"]:
        assert row["macs"] > 0
        for name in r["conditions"]:
            assert len(row[name]["median_ms"]) == len(row[name]["iqr_ms"]) == 2
            assert all(m > 0 for m in row[name]["median_ms"]) and all(i >= 0 for i in row[name]["iqr_ms"])
    macs = [row["macs"] for row in r["rows"]]
    assert macs == sorted(macs)  # spread over MACs, smallest first


def test_gpu_check_smoke(tmp_path: Path):
    out = tmp_path / "x.json"
    proc = run_script("gpu_check.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["device"] == "cpu" and r["settings"]["smoke"] and not r["errors"]
    train = r["train_throughput"]
    assert len(train) == 2
    for row in train:
        for mode in ("fp32", "bf16_channels_last"):
            assert row[mode]["images_per_s"] > 0 and 0 <= row[mode]["final_val_acc"] <= 1
        assert row["speedup_bf16_channels_last"] > 0
    s = r["search"]
    assert s["returncode"] == 0 and not s["timed_out"]
    assert s["trials"] == s["trials_complete"] == 2 and s["front_size"] >= 1
    assert 0 <= s["best_accuracy"] <= 1
    lat = r["latency"]
    assert {x["dtype"] for x in lat} == {"float32", "bfloat16"} and {x["batch_size"] for x in lat} == {1, 4}
    assert any(x["model"].startswith("cspresnet50") and x["input_size"] == 32 for x in lat)
    assert all(x["median_ms"] > 0 and x["settings"]["device"] == "cpu" for x in lat)
    parts = [row["part"] for row in r["table"]]
    assert parts.count("train") == 4 and parts.count("latency") == len(lat) and parts.count("search") == 1
    assert "GPU check on" in proc.stdout and "search" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_without_cuda_exits_2(tmp_path: Path):
    out = tmp_path / "x.json"
    proc = run_script("gpu_check.py", "--out", str(out), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--smoke" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()
