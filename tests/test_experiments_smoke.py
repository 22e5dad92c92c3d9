"""Experiment scripts run end to end in their tiny --smoke mode (real code, tiny data)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_fixture import make_run

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


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
def test_measurer_benchmark_smoke(tmp_path: Path):
    """The driver-blocked time per candidate, latency timed in the driver vs by the measuring actor (real Ray)."""
    out = tmp_path / "measurer.json"
    proc = run_script("bench_measurer.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["archs"] == len(r["rows"]) == 3 and r["measurer_start_s"] > 0
    for row in r["rows"]:
        assert row["driver_blocked_s"] > 0 and row["actor_blocked_s"] > 0
        assert row["driver_latency_ms"] > 0 and row["actor_latency_ms"] > 0
    assert r["median_latency_ratio_actor_over_driver"] > 0


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
        assert row["zc_synflow"] > 0 and row["zc_params"] == row["params"] and row["zc_naswot"] is not None
    assert -1.0 <= r["result"]["spearman_brief_vs_long"] <= 1.0
    vs_long = r["result"]["vs_long"]  # every proxy against long training, with its interval
    assert set(vs_long) == {"brief_training", "macs", "synflow", "naswot", "grad_norm", "params"}
    for proxy in vs_long.values():
        low, high = proxy["ci95"]
        assert proxy["n"] == 3 and -1.0 <= low <= high <= 1.0 and -1.0 <= proxy["spearman"] <= 1.0
    assert vs_long["params"]["spearman"] == pytest.approx(r["result"]["spearman_params_vs_long"])
    order = r["result"]["front_order"]  # the brief front's members, and whether long training keeps their order
    assert 1 <= order["brief_front"] <= 3 and order["pairs"] == order["brief_front"] * (order["brief_front"] - 1) // 2
    assert 0 <= order["pairs_flipped"] <= order["pairs"] and 0 <= order["still_on_long_front"] <= order["brief_front"]
    # --extend keeps a finished file's rows (not retrained) and adds archs from the same pool
    more = tmp_path / "proxy4.json"
    proc = run_script("proxy_fidelity.py", "--smoke", "--archs", "4", "--extend", str(out), "--out", str(more))
    assert proc.returncode == 0, proc.stderr
    r4 = json.loads(more.read_text())
    assert r4["complete"] and r4["rows"][:3] == r["rows"] and r4["settings"]["extends"]["rows"] == 3
    assert len({row["arch_hash"] for row in r4["rows"]}) == 4 and proc.stdout.count("/4 ") == 1  # one trained
    proc = run_script("proxy_fidelity.py", "--smoke", "--archs", "3", "--extend", str(out), "--out", str(more))
    assert proc.returncode != 0 and "already has 3 archs" in proc.stderr
    # --add-scores gives a file made before the scores existed the same scores, training nothing
    for row in r["rows"]:
        for key in [k for k in row if k.startswith("zc_")]:
            del row[key]
    del r["result"]["vs_long"]
    out.write_text(json.dumps(r))
    proc = run_script("proxy_fidelity.py", "--smoke", "--add-scores", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out.read_text())
    assert again["result"]["vs_long"] == vs_long and [row["long_acc"] for row in again["rows"]] == \
        [row["long_acc"] for row in r["rows"]]


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
    plotted = {"proxy_fidelity", "search_strategies", "csp_question", "latency_quality", "multi_fidelity"}
    expected = {f.stem for f in committed} & plotted
    assert {p.stem for p in tmp_path.glob("*.svg")} == expected
    for svg in tmp_path.glob("*.svg"):
        root = ET.parse(svg).getroot()  # well-formed XML
        marks = [e for e in root.iter() if e.tag.endswith(("circle", "polyline"))]
        assert marks, f"{svg.name} has no data marks"


@pytest.mark.slow
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


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path: Path):
    out = tmp_path / "x.json"
    proc = run_script("gpu_check.py", "--smoke", "--out", str(out), timeout=600)  # every part, a real search
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
    assert s["trials"] == s["trials_complete"] == 2 and s["front_size"] >= 1 and s["cuda_step"] == "eager"
    assert 0 <= s["best_accuracy"] <= 1
    # the evidence fields: throughput, worker memory, the goal (GPU utilisation needs nvidia-smi)
    assert s["trials_per_min"] > 0 and s["aggregate_images_per_s"] > 0 and s["train_images"] > 0
    assert s["worker_rss_mb"]["max"] > 50 and s["admission_wait_s"]["max"] >= 0 and s["retried_alone"] == 0
    assert r["goal"]["trials"] == 200 and set(r["goal_met"]) == set(r["goal"])
    steps = r["steps"]
    assert len(steps) == 2 and all(set(x["modes"]) == {"eager"} and x["best_for_search"] == "eager" for x in steps)
    assert all(x["modes"]["eager"]["images_per_s"] > 0 and x["modes"]["eager"]["setup_s"] >= 0 for x in steps)
    lat = r["latency"]
    assert {x["dtype"] for x in lat} == {"float32", "bfloat16"} and {x["batch_size"] for x in lat} == {1, 4}
    assert any(x["model"].startswith("cspresnet50") and x["input_size"] == 32 for x in lat)
    assert all(x["median_ms"] > 0 and x["settings"]["device"] == "cpu" for x in lat)
    parts = [row["part"] for row in r["table"]]
    assert parts.count("train") == 4 and parts.count("latency") == len(lat) and parts.count("search") == 1
    assert parts.count("steps") == 2
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


# ---------------------------------------------------------------- committed results reproduce

CIFAR = Path(os.environ.get("CSPNAS_CIFAR10_JPEG", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
needs_cifar = pytest.mark.skipif(not CIFAR.is_file() and not (REPO / ".cache" / "cifar10-jpeg").is_dir(),
                                 reason="CIFAR-10 JPEGs (../shared/data) not available")


@needs_cifar  # not slow: CI keeps checking the cross-CPU fix of the committed number (issue 17)
def test_committed_proxy_fidelity_reproduces():
    """Re-train the smallest committed architecture briefly, twice: the two runs agree within 0.002 (training
    on CIFAR-10 is deterministic on this machine) and the committed accuracy is within 0.03 of them."""
    proc = run_script("proxy_fidelity.py", "--check", "1", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok") == 1 and proc.stdout.count(" and ") == 1  # two re-runs printed


@pytest.mark.slow
@needs_cifar
def test_committed_csp_question_reproduces():
    """The committed accuracy is within 0.03 of one re-training (15 epochs; that a second run on this machine
    agrees is shown, at a fifth of the cost, by the proxy fidelity check above)."""
    proc = run_script("csp_question.py", "--check", "fusion_last@0.25", "--reruns", "1", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fusion_last@0.25: committed" in proc.stdout and proc.stdout.rstrip().endswith("ok")


def test_latency_backends_smoke(tmp_path: Path):
    out = tmp_path / "b.json"
    proc = run_script("latency_backends.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["settings"]["archs"] == len(r["rows"]) == 3 and r["settings"]["calibration_images"] == 32
    for row in r["rows"]:
        assert all(row[b]["latency_ms"] > 0 and row[b]["cost_s"] > 0 for b in ("torch", "ort_fp32", "ort_int8"))
        for b in ("ort_fp32", "ort_int8"):  # re-timed in a fresh process, error against the record
            assert row[b]["retimed_ms"] > 0
            assert row[b]["retime_error"] == pytest.approx(row[b]["retimed_ms"] / row[b]["latency_ms"] - 1)
    assert all(-1 <= v <= 1 for v in r["spearman"].values())
    assert 0 <= r["retime_abs_error"]["ort_int8"]["median"] <= r["retime_abs_error"]["ort_int8"]["p90"]
    (acc,) = r["int8_accuracy"]["rows"]
    assert 0 <= acc["val_acc"] <= 1 and 0 <= acc["val_acc_int8"] <= 1
    assert acc["change"] == pytest.approx(acc["val_acc_int8"] - acc["val_acc"])


def test_latency_model_smoke(tmp_path: Path):
    out = tmp_path / "lm.json"
    proc = run_script("latency_model.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())["backends"]["torch"]
    assert r["held_out"]["n"] == 8 and 0 <= r["held_out"]["within_10pct"] <= 1
    assert [c["archs"] for c in r["learning_curve"]] == [30] and r["in_sample"]["n"] == 32
    assert r["screening"]["uniform_per_s"] > 0 and r["tight_search"]["screened"] >= r["tight_search"]["trained"] == 20


def test_bookkeeping_benchmark_smoke(tmp_path: Path):
    out = tmp_path / "bookkeeping.json"
    proc = run_script("bench_bookkeeping.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert [s["trials"] for s in r["sizes"]] == [20, 60]
    for s in r["sizes"]:
        new = s["new_per_trial_s"]
        assert s["old_warm_s"] > 0 and s["old_cold_s"] > 0 and 0 < new["median"] <= new["p90"] <= new["max"]
        assert s["new_trials_timed"] == 5 and s["front_size"] >= 1


@pytest.mark.slow
def test_driver_stall_smoke(tmp_path: Path):
    out = tmp_path / "stall.json"
    proc = run_script("driver_stall.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    wait = r["wait_s"]
    assert r["candidates_measured_while_training"] == len(wait["all"]) >= 1
    assert 0 <= wait["median"] <= wait["max"] and r["training_step_s"]["median"] > 0
    (driver,) = r["driver"]
    assert driver["busy_share"] + driver["idle_share"] == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_headline_smoke_then_resume_redoes_nothing(tmp_path: Path):
    out = tmp_path / "headline.json"
    proc = run_script("headline.py", "--smoke", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["complete"] and len(r["levels"]) == 3 and r["levels"] == sorted(r["levels"])
    families = {m["family"] for m in r["models"].values() if m["kind"] == "baseline"}
    assert families == {"resnet", "cspresnet", "cspdarknet", "cs3darknet", "darknet"}
    assert set(r["runs"]) == {"cspnas", "random"} and r["picks"]
    for name, m in r["models"].items():  # every compared model: fully trained, tested, re-timed
        assert set(m["test_acc"]) == {"0"} and 0 <= m["test_acc"]["0"] <= 1 and m["latency_ms"] > 0, name
    for pick, name in r["picks"].items():  # a pick is at or under its level when the search timed it
        assert r["models"][name]["search_latency_ms"] <= r["levels"][int(pick.split("@")[1])]
    assert len(r["verdicts"]) == 3 and (out.with_suffix(".svg")).is_file()
    before = out.read_text()
    proc = run_script("headline.py", "--smoke", "--resume", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "seed 0" not in proc.stdout  # nothing trained again
    after = json.loads(out.read_text())
    assert after["models"] == json.loads(before)["models"]
    assert after["wall_s"] >= json.loads(before)["wall_s"] > 0  # the resumed run's seconds add to the first's


def test_headline_verdicts_follow_the_goal():
    """The issue's goal, on made-up results: +1 point over the best baseline at the level (latency within 2%)
    and more than twice the seed spread, or within the spread at <= 0.7x its latency; and above the random pick."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        from headline import verdicts
    finally:
        sys.path.pop(0)

    def model(kind: str, ms: float, *accs: float) -> dict:
        return {"kind": kind, "latency_ms": ms, "test_acc": {str(i): a for i, a in enumerate(accs)}}

    models = {"fam-s": model("baseline", 1.0, 0.60, 0.61, 0.62), "fam-m": model("baseline", 2.01, 0.70, 0.70, 0.70),
              "fam-l": model("baseline", 4.0, 0.80, 0.80, 0.80), "c1": model("cspnas", 0.95, 0.64, 0.64, 0.64),
              "c2": model("cspnas", 1.3, 0.70, 0.71, 0.69), "c3": model("cspnas", 3.5, 0.805, 0.80, 0.80),
              "r": model("random", 0.9, 0.50, 0.50, 0.50)}
    picks = {"cspnas@0": "c1", "cspnas@1": "c2", "cspnas@2": "c3", "random@0": "r", "random@1": "r", "random@2": "r"}
    v = verdicts(models, picks, [1.0, 2.0, 4.0])
    # level 1 ms: +3 points over fam-s (spread 1 point): beaten, and so is random
    assert v[0]["best_baseline"] == "fam-s" and v[0]["beats_baseline"] and v[0]["goal_met"]
    assert v[0]["gain_points"] == pytest.approx(3.0)
    # level 2 ms: fam-m at 2.01 ms is at the level (noise); c2 ties it at 0.65x its latency
    assert v[1]["best_baseline"] == "fam-m" and not v[1]["beats_baseline"] and v[1]["matches_faster"]
    # level 4 ms: +0.17 points at 0.875x the latency: neither beaten nor matched fast enough
    assert v[2]["best_baseline"] == "fam-l" and not v[2]["goal_met"]
    models["r"]["test_acc"] = {"0": 0.9}  # a random pick above cspnas's fails the goal everywhere
    assert not any(row["goal_met"] for row in verdicts(models, picks, [1.0, 2.0, 4.0]))


@pytest.mark.slow
def test_multi_fidelity_smoke(tmp_path: Path):
    import xml.etree.ElementTree as ET

    out = tmp_path / "mf.json"
    proc = run_script("multi_fidelity.py", "--smoke", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert [run["method"] for run in r["runs"]] == ["fixed", "asha", "pareto"]  # no prefilter arm unless asked
    for run in r["runs"]:
        budget = 3 if run["method"] == "fixed" else 4
        assert sum(run["states"].get(s, 0) for s in ("complete", "pruned", "failed")) == budget
        c = run["curve"]
        assert len(c["train_s"]) == len(c["epochs"]) == len(c["hv"]) == budget
        assert all(a <= b for a, b in zip(c["hv"], c["hv"][1:]))
        assert all(a <= b for a, b in zip(c["train_s"], c["train_s"][1:]))
        assert 0.0 <= run["final_hv"] == c["hv"][-1] <= 1.0 and run["train_s"] == c["train_s"][-1] > 0
    fixed = r["summary"]["fixed"]
    assert fixed["epochs_per_seed"] == [3 * 2] and fixed["pruned_per_seed"] == [0]
    assert 0 < fixed["share_to_baseline_final_per_seed"][0] <= 1.0  # it reaches its own final, at the latest at the end
    assert fixed["goal_met"] is None and all(isinstance(r["summary"][m]["goal_met"], bool) for m in ("asha", "pareto"))
    assert set(r["summary"]) == {"fixed", "asha", "pareto"} and r["settings"]["mf_budget"] == 4
    root = ET.parse(out.with_suffix(".svg")).getroot()
    assert [e for e in root.iter() if e.tag.endswith("polyline")]
    # a re-run finds the finished searches and only re-reads them
    again = run_script("multi_fidelity.py", "--smoke", "--out", str(out), timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(out.read_text())["runs"] == [dict(run, wall_s=None) for run in r["runs"]]
@pytest.mark.slow  # two trainings in fresh processes (forced kernels): ~30 s quiet, 295 s on a loaded host
def test_accuracy_noise_smoke(tmp_path: Path):
    out = tmp_path / "noise.json"
    proc = run_script("accuracy_noise.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["complete"] and len(r["rows"]) == 2 and r["settings"]["seeds"] == 2
    first, second = r["rows"]
    assert len(first["seed_acc"]) == 2 and first["seed_range"] == max(first["seed_acc"]) - min(first["seed_acc"])
    runs = first["kernel_acc"]["0"]  # seed 0 under each forced ATen kernel set, in fresh processes
    assert runs["capabilities"]["default"] == "DEFAULT" and 0 <= runs["default"] <= 1
    assert len(first["kernel_diffs"]) == len(r["settings"]["kernels"]) - 1 and second["kernel_acc"] == {}
    n_val, p = r["result"]["validation_images"], r["result"]["mean_accuracy"]
    assert r["result"]["binomial_std_at_mean"] == pytest.approx((p * (1 - p) / n_val) ** 0.5)
    assert r["result"]["per_run_std"] >= r["result"]["seed_std_pooled"] >= 0


def test_latency_statistic_smoke(tmp_path: Path):
    out = tmp_path / "s.json"
    proc = run_script("latency_statistic.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    for backend in ("torch", "onnxruntime"):
        rows = r["results"][backend]
        assert set(rows) == {"min", "p10", "median"} and rows["median"]["over_median"] == pytest.approx(1.0)
        assert rows["min"]["over_median"] <= rows["p10"]["over_median"] <= 1.0
        for row in rows.values():
            rr = row["recorded_vs_retimed"]
            assert 0 <= rr["median"] <= rr["p90"] <= rr["max"] and rr["n"] == 2 * 3 * 3  # 2 process orders x 3 archs x 3 passes


def test_confirmation_effect_reads_what_the_confirmation_changed(tmp_path: Path):
    import pandas as pd

    from cspnas.run_format import load_run

    run = make_run(tmp_path, n=12, accuracy_noise=0.0)
    front = load_run(run).front
    trials = pd.read_csv(run / "trials.csv")
    # the confirmation re-timed every front member: the fastest one turned out 3x slower, the rest agreed
    members = trials["trial"].isin(front["trial"])
    trials["latency_confirmed_ms"] = trials["latency_ms"].where(members)
    trials["latency_confirmed_iqr_ms"] = trials["latency_iqr_ms"].where(members)
    fastest = trials.loc[members, "latency_ms"].idxmin()
    trials.loc[fastest, "latency_confirmed_ms"] *= 3
    trials.to_csv(run / "trials.csv", index=False)
    out = tmp_path / "ce.json"
    proc = run_script("confirmation_effect.py", str(run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["before"] == len(front) and row["confirmed_trials"] == len(front)
    assert row["confirmed_change_max"] == pytest.approx(2.0)
    assert row["after"] == row["kept"] + row["joined"] and row["before"] == row["kept"] + row["left"]
