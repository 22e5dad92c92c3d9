"""The Ray Tune trainable: brief training of one candidate, reported to Tune per epoch.

It runs in a Ray worker process. Deterministic failures (divergence, out of memory, a
model that fails to build) are caught and reported as a final result with
status 'failed' and the reason, so Ray does not retry them; only a dying worker reaches
Ray's retry logic.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from cspnas.data import ImageData, load_dataset
from cspnas.models import build_model
from cspnas.search.evaluators import DEFAULT_EVALUATOR, candidate_evaluator
from cspnas.search.faults import trial_fault
from cspnas.search.gate import MeasureGate
from cspnas.space import ArchConfig
from cspnas.train import TrainConfig, TrainingDiverged
from cspnas.train.checkpoint import save_weights
from cspnas.train.quantized import int8_accuracy

# One decoded data set per worker process: with actor reuse, later trials skip loading.
_DATA: dict[str, ImageData] = {}


def _dataset(spec: dict[str, Any]) -> ImageData:
    key = repr(sorted(spec.items()))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_dataset(**spec)
    return _DATA[key]


def _node_id() -> str:
    """Which Ray node trains this trial (recorded so cluster runs can be audited)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (e.g. called directly in a test)
        return ""


def train_candidate(config: dict[str, Any]) -> None:
    """config: trial, arch (JSON), run_dir, data (load_dataset kwargs), train (TrainConfig kwargs), evaluator
    (a registered name), keep_weights, threads, int8 (None, or calibration_images and seed)."""
    torch.set_num_threads(int(config["threads"]))
    cfg = TrainConfig(**config["train"])
    evaluator = candidate_evaluator(config.get("evaluator", DEFAULT_EVALUATOR))
    rounds = evaluator.rounds(cfg)
    run_dir = Path(config["run_dir"])
    trial = int(config["trial"])
    history: list[float] = []
    start = time.perf_counter()
    gate_pass = None  # set while training holds the measurement gate

    def report(status: str, epoch: int, **extra: Any) -> None:
        with gate_pass.released() if gate_pass is not None else contextlib.nullcontext():
            _report(status, epoch, **extra)

    node = _node_id()

    def _report(status: str, epoch: int, **extra: Any) -> None:
        tune.report({"trial": trial, "status": status, "epoch": epoch, "node": node,
                     "val_acc": history[-1] if history else 0.0, "val_acc_per_epoch": list(history),
                     "train_seconds": time.perf_counter() - start, **extra})

    try:
        data = _dataset(config["data"])
        torch.manual_seed(cfg.seed)  # same arch + seed -> same initial weights
        model = build_model(ArchConfig.from_json(config["arch"]))
        weights = run_dir / "weights" / f"trial-{trial}.safetensors"

        def on_epoch(rep) -> None:
            history.append(rep.val_acc)
            if rep.epoch == 1:
                trial_fault(run_dir, trial)  # tests only (CSPNAS_TEST_FAULT); a no-op otherwise
            done = rep.epoch == rounds
            extra = {}
            if done and config["keep_weights"]:
                save_weights(model, weights)  # before the final report: Tune may stop us right after it
                extra["weights"] = str(weights.relative_to(run_dir))
            if done and config.get("int8"):  # the int8 model's accuracy, beside the float one
                extra["val_acc_int8"] = int8_accuracy(model, data, config["int8"]["calibration_images"],
                                                      config["int8"]["seed"], threads=int(config["threads"]))
            report("complete" if done else "running", rep.epoch, **extra)

        on_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        sync = torch.cuda.synchronize if on_cuda else None
        try:
            with MeasureGate(run_dir / ".locks").training(before_pause=sync) as gate_pass:
                evaluator.evaluate(model, data, cfg, on_round=on_epoch, step_hook=gate_pass.checkpoint)
        finally:
            gate_pass = None  # the gate is closed; reports from here on need no release
    except TrainingDiverged as e:
        report("failed", len(history), failure_reason=f"diverged: {e}")
    except torch.OutOfMemoryError as e:
        report("failed", len(history), failure_reason=f"out of GPU memory: {str(e).splitlines()[0]}")
    except MemoryError:
        report("failed", len(history), failure_reason="out of host memory")
    except Exception as e:  # a model that fails to build or run is a result, not a crash
        # (Tune stops a trial with SystemExit, which is not an Exception and passes through)
        report("failed", len(history), failure_reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
