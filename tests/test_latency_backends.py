"""Deploy runtimes: the onnxruntime latency backend (fp32 and int8 QDQ), and that what a search
records is what `cspnas export` ships (same bytes, re-timed in a fresh process)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from cspnas.cost import LatencySettings, measure_latency
from cspnas.cost.onnx_runtime import (ONNX_OPSET, QuantizationError, deploy_bytes, quantize_int8,
                                      random_calibration, session)
from cspnas.errors import CspnasError
from cspnas.models import build_model
from cspnas.space import ArchConfig, StageConfig, StemConfig

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(min_run_time_s=0.02, warmup=1, input_size=16)


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ArchConfig(stem=StemConfig(out_chs=(8,)), in_chs=3, num_classes=10, stages=(
        StageConfig(depth=1, out_chs=16, stride=2, stage_type="csp", block_type="dark"),)))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cspnas.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_onnxruntime_backend_times_the_exported_bytes_and_records_how():
    model = small_model()
    for precision in ("fp32", "int8"):
        settings = LatencySettings(backend="onnxruntime", precision=precision, **FAST)
        lat = measure_latency(model, settings)
        assert lat.ms > 0 and lat.runs >= 10 and lat.iqr_ms >= 0
        info = json.loads(lat.to_dict()["backend_info"])
        assert info["name"] == "onnxruntime" and info["onnxruntime"] == ort.__version__
        assert info["opset"] == ONNX_OPSET and info["precision"] == precision
        assert info["session"] == {"intra_op_num_threads": 1, "inter_op_num_threads": 1,
                                   "execution_mode": "sequential", "graph_optimization_level": "all",
                                   "providers": ["CPUExecutionProvider"]}
        assert ("quantization" in info) == (precision == "int8")
    # int8 is QDQ, and deterministic: same weights and calibration images -> the same file
    settings = LatencySettings(backend="onnxruntime", precision="int8", **FAST)
    data = deploy_bytes(model, settings)
    assert data == deploy_bytes(model, settings)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    other = deploy_bytes(model, settings, random_calibration(LatencySettings(**FAST, calibration_seed=1)))
    assert other != data  # the calibration images are part of the artifact
    assert json.loads(measure_latency(model, settings).to_dict()["backend_info"])["calibration_source"] == \
        "random normal"
    # the int8 model runs and stays close to float32 on its own calibration images
    x = random_calibration(settings)[:4]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = session(data).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() < 0.2 * max(1.0, np.abs(expected).max())


def test_bad_backend_or_precision_is_one_line():
    for kw, words in ((dict(precision="int4"), "unknown latency precision 'int4'"),
                      (dict(precision="int8"), "use the onnxruntime latency backend"),
                      (dict(backend="onnxruntime", dtype="bfloat16"), "use device cpu, dtype float32"),
                      (dict(backend="tensorrt"), "unknown latency backend 'tensorrt'"),
                      (dict(calibration_images=0), "calibration_images must be an integer >= 1")):
        with pytest.raises(CspnasError, match=words):
            LatencySettings(**kw)
    # a model ONNX Runtime cannot quantize (here: not an ONNX model at all) is one clear error
    with pytest.raises(QuantizationError, match="could not quantize the model to int8"):
        quantize_int8(b"not an onnx model", np.zeros((1, 3, 8, 8), np.float32))


def test_cli_refuses_bad_precision_and_writes_nothing(tmp_path):
    for args, words in ((("inspect", "cspdarknet53", "--input-size", "32", "--precision", "int8"),
                         "onnxruntime latency backend"),
                        (("inspect", "cspdarknet53", "--backend", "onnxruntime", "--precision", "int4"),
                         "unknown latency precision"),
                        (("search", "--name", "r", "--results-dir", "res", "--latency-backend", "torch",
                          "--latency-precision", "int8"),
                         "--latency-precision int8 is ONNX Runtime's quantization; add --latency-backend"),
                        (("search", "--name", "r", "--results-dir", "res", "--latency-backend", "tflite"),
                         "unknown latency backend 'tflite'")):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a real int8 search, exported and re-timed


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    from cspnas.search.runner import run_search
    from cspnas.search.settings import SearchSettings, search_training

    root = tmp_path_factory.mktemp("int8")
    settings = SearchSettings(name="run", results_dir=str(root), budget=4, train=search_training(epochs=1),
                              concurrency=2, device="cpu", sampler="random", keep_weights="all",
                              latency_backend="onnxruntime", latency_precision="int8",
                              latency_min_run_time_s=0.05)
    os.environ["CSPNAS_TEST_FAULT"] = "quantize@1"  # the driver's cost step reads it
    try:
        out = run_search(settings, live=False, dashboard=False)
    finally:
        del os.environ["CSPNAS_TEST_FAULT"]
        import ray

        if ray.is_initialized():
            ray.shutdown()
    return out.run_dir, pd.read_csv(out.run_dir / "trials.csv").set_index("trial")


@pytest.mark.slow
def test_int8_search_records_runtime_accuracy_and_quantization_failures(int8_run):
    run, trials = int8_run
    assert len(trials) == 4
    assert trials.loc[1, "state"] == "failed"  # its quantization failed: recorded, the search went on
    assert "could not quantize the model to int8" in trials.loc[1, "failure_reason"]
    done = trials[trials["state"] == "complete"]
    assert len(done) == 3
    assert done["val_acc_int8"].between(0, 1).all() and done["accuracy"].between(0, 1).all()
    for text in done["latency_backend"]:
        info = json.loads(text)
        assert info["name"] == "onnxruntime" and info["precision"] == "int8"
        assert info["calibration_source"] == "training images"
        assert info["quantization"]["calibration_images"] == 32 and info["session"]["intra_op_num_threads"] == 1
    latency = yaml.safe_load((run / "config.yaml").read_text())["latency"]
    assert (latency["backend"], latency["precision"], latency["calibration_images"]) == ("onnxruntime", "int8", 32)


@pytest.mark.slow
def test_exported_int8_is_the_timed_artifact_and_retimes_like_the_record(int8_run, tmp_path):
    from cspnas.data import load_dataset
    from cspnas.search.settings import SearchSettings
    from cspnas.train.quantized import calibration_batch

    run, trials = int8_run
    trial = int(trials[trials["state"] == "complete"].index[0])
    proc = cli("export", str(run), "--pick", f"trial:{trial}", "--format", "onnx,onnx-int8", "--out",
               str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shipped = tmp_path / "out" / "model.int8.onnx"
    assert "model.int8.onnx" in proc.stdout and shipped.is_file()
    card = (tmp_path / "out" / "MODEL.md").read_text()
    assert "of the exported ONNX (int8) in ONNX Runtime" in card and "| int8 validation accuracy |" in card

    # the search's quantization recipe (its latency settings, its training images) on the trained weights
    config = yaml.safe_load((run / "config.yaml").read_text())
    settings = LatencySettings.from_dict(config["latency"])
    data = load_dataset(**SearchSettings.from_dict(config["settings"]).data_spec())
    model = build_model(ArchConfig.from_json(trials.loc[trial, "arch_json"]))
    model.load_state_dict(load_file(str(run / trials.loc[trial, "weights"])))
    calibration = calibration_batch(data, settings.calibration_images, settings.calibration_seed,
                                    settings.input_size)
    assert shipped.read_bytes() == deploy_bytes(model, settings, calibration)

    # re-timed in a fresh process by plain ONNX Runtime at the recorded settings: close to the record
    # (loose: the machine is shared; torch eager on these nets is 2-5x off, so the bound can fail)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"model": str(shipped), "backend_info": json.loads(trials.loc[trial, "latency_backend"]),
                                 "shape": list(settings.input_shape)}]))
    retimed = subprocess.run([sys.executable, str(ROOT / "experiments" / "retime_onnx.py"), str(jobs)],
                             capture_output=True, text=True, timeout=120, check=True)
    ratio = json.loads(retimed.stdout)[0]["ms"] / trials.loc[trial, "latency_ms"]
    assert 0.5 < ratio < 2.0, ratio
