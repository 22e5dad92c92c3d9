"""One source for every default: the settings dataclasses; the CLI's flags and help derive from them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml

from cspnas.cli import build_parser
from cspnas.commands.search_cmd import _settings
from cspnas.cost import LATENCY_BACKENDS, LatencyBackend, LatencySettings, Timing, measure_latency
from cspnas.cost.backends import register_latency_backend
from cspnas.errors import CspnasError
from cspnas.search.evaluators import EVALUATORS, CandidateEvaluator, Round, candidate_evaluator, register_evaluator
from cspnas.search.runner import trial_train_config
from cspnas.objectives import ACCURACY_NOISE_POINTS
from cspnas.search.settings import CPU_CONCURRENCY, SearchSettings, search_training
from cspnas.train import TrainConfig

# config.yaml's `settings` as cspnas 0.1.0 wrote it: the trials' training spelled flat
OLD_SETTINGS = """
name: old
results_dir: results
space: default
dataset: digits
data_dir: null
val_fraction: 0.1
train_subset: null
budget: 12
epochs: 3
batch_size: 64
lr: 0.1
concurrency: 2
sampler: tpe
scheduler: none
seed: 7
device: cpu
train_precision: bf16
cpus_per_trial: 1.0
gpus_per_trial: null
constraints: {max_latency_ms: 10.0, max_macs: null, max_params: null}
latency_device: cpu
latency_batch_size: 1
latency_threads: 1
latency_dtype: float32
latency_input_size: null
latency_min_run_time_s: 0.1
keep_weights: front
address: null
"""


def _search_args(*flags: str):
    return _settings(build_parser().parse_args(["search", "--name", "x", *flags]))


def test_flags_not_given_take_the_dataclass_defaults():
    assert _search_args() == SearchSettings(name="x")
    defaults = SearchSettings(name="x")
    assert defaults.train == search_training(seed=defaults.seed, device=defaults.device)
    assert defaults.train.epochs == TrainConfig.epochs  # the one place the epochs default lives


def test_given_flags_reach_the_nested_training_config():
    s = _search_args("--epochs", "2", "--lr", "0.05", "--batch-size", "32", "--seed", "3", "--train-precision", "bf16")
    assert (s.train.epochs, s.train.lr, s.train.batch_size, s.train.seed) == (2, 0.05, 32, 3)
    assert s.train.bf16 and s.train.channels_last
    assert TrainConfig(**trial_train_config(s, "cpu")) == dataclasses.replace(s.train, device="cpu")


def test_help_texts_show_the_dataclass_defaults():
    text = subprocess.run([sys.executable, "-m", "cspnas.cli", "search", "--help"], capture_output=True, text=True,
                          timeout=60).stdout
    text = " ".join(text.split())
    for flag, default in (("--epochs", TrainConfig.epochs), ("--budget", SearchSettings.budget),
                          ("--lr", TrainConfig.lr), ("--accuracy-noise", SearchSettings.accuracy_noise),
                          ("--evaluator", SearchSettings.evaluator)):
        entry = text[text.index(f" {flag} ", text.index("options:")):].split(" --")[1]  # this flag's help
        assert f"(default {default})" in entry, entry
    assert "(default onnxruntime on a cpu float32 latency, else torch)" in text
    assert f"(default: on CUDA, trials per GPU x GPUs, see --trials-per-gpu; on the CPU {CPU_CONCURRENCY})" in text
    inspect_help = build_parser().subcommands["inspect"].format_help()
    assert f"(default {LatencySettings.threads})" in inspect_help
    train_help = build_parser().subcommands["train"].format_help()
    assert f"(default {TrainConfig.batch_size})" in train_help and f"(default {TrainConfig.lr})" in train_help


def test_config_round_trip_is_nested_and_complete():
    s = _search_args("--epochs", "2", "--seed", "4")
    d = yaml.safe_load(yaml.safe_dump(s.to_dict()))
    assert d["train"]["epochs"] == 2 and "epochs" not in d
    assert "seed" not in d["train"] and "device" not in d["train"]  # the search's own, written once
    assert SearchSettings.from_dict(d) == s


def test_old_flat_config_still_loads():
    old = yaml.safe_load(OLD_SETTINGS)
    s = SearchSettings.from_dict(old)
    assert (s.train.epochs, s.train.batch_size, s.train.lr) == (3, 64, 0.1)
    assert s.accuracy_noise == 0 and s.concurrency == 2  # made before the settings: exact front, as recorded
    assert s.train.bf16 and s.train.channels_last  # train_precision: bf16
    assert (s.train.seed, s.train.device, s.seed) == (7, "cpu", 7)
    assert s.budget == 12 and s.constraints.max_latency_ms == 10.0
    assert s.latency_backend == "torch" and s.evaluator == "brief-training"  # settings added since
    assert s.latency_statistic == "median"  # what runs recorded before the setting existed
    assert SearchSettings(name="x").latency_statistic == LatencySettings().statistic == "min"
    assert SearchSettings.from_dict(yaml.safe_load(yaml.safe_dump(s.to_dict()))) == s
    with pytest.raises(CspnasError, match="train_precision must be one of"):
        SearchSettings.from_dict({**old, "train_precision": "fp8"})
    with pytest.raises(CspnasError, match="unknown setting"):
        SearchSettings.from_dict({**old, "epochz": 3})


def test_unknown_backend_and_evaluator_are_one_clear_error():
    with pytest.raises(CspnasError, match="unknown latency backend 'onnx'; choose one of onnxruntime, torch"):
        LatencySettings(backend="onnx")
    with pytest.raises(CspnasError, match="unknown latency backend"):
        _search_args("--latency-backend", "nope")
    with pytest.raises(CspnasError, match="unknown evaluator 'zero'; choose one of brief-training"):
        _search_args("--evaluator", "zero")


def test_latency_statistic_is_checked_and_recorded():
    with pytest.raises(CspnasError, match="--latency-statistic must be one of min, p10, median, got 'mean'"):
        _search_args("--latency-statistic", "mean")
    with pytest.raises(CspnasError, match="unknown latency statistic 'mean'"):
        LatencySettings(statistic="mean")
    model = torch.nn.Conv2d(3, 4, 3)
    lat = measure_latency(model, LatencySettings(min_run_time_s=0.01, warmup=1, input_size=8, statistic="min"))
    assert lat.backend["statistic"] == "min" and lat.to_dict()["statistic"] == "min"


def test_latency_backend_registry_and_record():
    model = torch.nn.Conv2d(3, 4, 3)
    lat = measure_latency(model, LatencySettings(min_run_time_s=0.01, warmup=1, input_size=8))
    assert lat.backend["name"] == "torch" and lat.backend["torch"] == torch.__version__
    assert '"name": "torch"' in lat.to_dict()["backend_info"]

    class Fixed(LatencyBackend):  # a backend that needs no hardware: proves the seam
        name = "fixed-test"

        def describe(self, settings):
            return {"name": self.name, "version": "1"}

        def measure(self, model, settings, calibration=None):
            return Timing(ms=1.5, iqr_ms=0.1, runs=4, noisy=False)

    register_latency_backend(Fixed)
    try:
        lat = measure_latency(model, LatencySettings(backend="fixed-test"))
        assert (lat.ms, lat.backend, lat.settings.backend) == (1.5, {"name": "fixed-test", "version": "1"},
                                                                      "fixed-test")
    finally:
        del LATENCY_BACKENDS["fixed-test"]


def test_evaluator_registry_drives_rounds():
    brief = candidate_evaluator("brief-training")
    assert brief.rounds(TrainConfig(epochs=4)) == 4

    class Constant(CandidateEvaluator):
        name = "constant-test"

        def rounds(self, train):
            return 1

        def evaluate(self, model, data, train, *, on_round, step_hook):
            step_hook()
            on_round(Round(1, 0.5))

    register_evaluator(Constant)
    try:
        seen = []
        candidate_evaluator("constant-test").evaluate(None, None, TrainConfig(), on_round=seen.append,
                                                      step_hook=lambda: None)
        assert seen == [Round(1, 0.5)]
        assert SearchSettings(name="x", evaluator="constant-test").evaluator == "constant-test"
    finally:
        del EVALUATORS["constant-test"]


def test_concurrency_is_derived_from_packing_on_cuda_and_fixed_on_the_cpu(monkeypatch):
    import torch

    from cspnas.search import runner

    assert SearchSettings(name="x").concurrency is None  # not given: derived by the search, then recorded
    assert runner.derive_concurrency(SearchSettings(name="x"), "cpu", None, None)[0] == CPU_CONCURRENCY
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    n, why = runner.derive_concurrency(SearchSettings(name="x", trials_per_gpu=6), "cuda", None, None)
    assert (n, why) == (12, "6 per GPU (--trials-per-gpu) x 2 GPUs")
    assert runner.derive_concurrency(SearchSettings(name="x", gpus_per_trial=0.25), "cuda", None, None)[0] == 8
    monkeypatch.setattr(runner, "fitting_trials_per_gpu", lambda space, data, train: (5, "fits"))
    assert runner.derive_concurrency(SearchSettings(name="x"), "cuda", None, None) == (10, "5 per GPU (fits) x 2 GPUs")


def test_accuracy_noise_is_checked():
    assert SearchSettings(name="x").accuracy_noise == ACCURACY_NOISE_POINTS
    assert _search_args("--accuracy-noise", "0").accuracy_noise == 0
    for bad in ("-1", "nan", "100"):
        with pytest.raises(CspnasError, match="--accuracy-noise must be points"):
            _search_args("--accuracy-noise", bad)
