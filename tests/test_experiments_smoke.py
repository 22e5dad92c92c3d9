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


def test_proxy_fidelity_smoke(tmp_path: Path):
    out = tmp_path / "proxy.json"
    proc = run_script("proxy_fidelity.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["complete"] and len(r["rows"]) == 3
    assert len({row["arch_hash"] for row in r["rows"]}) == 3
    macs = [row["macs"] for row in r["rows"]]
    assert macs == sorted(macs) and macs[0] < macs[-1]  # spread over the space, smallest first
    for row in r["rows"]:
        assert 0.0 <= row["brief_acc"] <= 1.0 and len(row["long_acc_per_epoch"]) == 2
        assert row["long_acc"] == row["long_acc_per_epoch"][-1]
    assert -1.0 <= r["result"]["spearman_brief_vs_long"] <= 1.0


def test_csp_question_smoke(tmp_path: Path):
    out = tmp_path / "csp.json"
    proc = run_script("csp_question.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    table = {t["variant"]: t for t in r["table"]}
    expected = {"plain", "plain-narrow"} | {f"{s}@{x}" for s in ("csp", "fusion_first", "fusion_last")
                                            for x in (0.25, 0.5, 0.75)}
    assert set(table) == expected
    assert table["plain"]["macs_vs_plain"] == 1.0
    assert table["plain-narrow"]["macs"] < table["plain"]["macs"]
    for t in table.values():
        assert t["macs"] > 0 and t["latency_ms"] > 0 and 0.0 <= t["acc_mean"] <= 1.0


@pytest.mark.slow
def test_search_strategies_smoke(tmp_path: Path):
    out = tmp_path / "strategies.json"
    proc = run_script("search_strategies.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert {run["sampler"] for run in r["runs"]} == {"random", "tpe", "nsga2"}
    for run in r["runs"]:
        assert len(run["curve"]) == 3 and sum(run["states"].values()) == 3
        assert all(a <= b for a, b in zip(run["curve"], run["curve"][1:]))  # hypervolume never drops
        assert 0.0 <= run["final_hv"] <= 1.0
    # a re-run finds the finished searches and only re-reads them
    again = run_script("search_strategies.py", "--smoke", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert json.loads(out.read_text())["runs"] == [dict(run, wall_s=None) for run in r["runs"]]


def test_plot_results_draws_every_committed_result(tmp_path: Path):
    import shutil
    import xml.etree.ElementTree as ET

    committed = sorted((REPO / "results" / "benchmarks").glob("*.json"))
    for f in committed:
        shutil.copy(f, tmp_path / f.name)
    proc = run_script("plot_results.py", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    plotted = {"proxy_fidelity", "search_strategies", "csp_question", "latency_quality"}
    expected = {f.stem for f in committed} & plotted
    assert {p.stem for p in tmp_path.glob("*.svg")} == expected
    for svg in tmp_path.glob("*.svg"):
        root = ET.parse(svg).getroot()  # well-formed XML
        marks = [e for e in root.iter() if e.tag.endswith(("circle", "polyline"))]
        assert marks, f"{svg.name} has no data marks"
