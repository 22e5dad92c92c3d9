"""The Ray Tune trainable: brief training of one candidate, reported to Tune per epoch.

It runs in a Ray worker process, which Tune reuses for many trials. Deterministic failures
(divergence, out of memory, a model that fails to build) are caught and reported as a final
result with status 'failed' and the reason, so Ray does not retry them; only a dying worker
reaches Ray's retry logic. A trial is admitted to its device by the run's memory ledger
(cspnas.search.packing); one that runs out of GPU memory is retried once alone on its device.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import torch
from ray import tune

from cspnas.data import ImageData, load_dataset
from cspnas.models import build_model
from cspnas.search.evaluators import DEFAULT_EVALUATOR, candidate_evaluator
from cspnas.faults import trial_fault
from cspnas.search.gate import STOP_FILE, MeasureGate, SearchStopping
from cspnas.search.packing import Ledger, this_device, trial_bytes
from cspnas.space import ArchConfig
from cspnas.train import TrainConfig, TrainingDiverged
from cspnas.train.checkpoint import save_weights
from cspnas.train.config import resolve_device
from cspnas.train.loop import eval_batch_size
from cspnas.train.quantized import int8_accuracy

# One decoded data set per worker process, already on the training device: with actor reuse,
# later trials skip loading and copying. Keyed by the data spec and device (the fingerprint).
_DATA: dict[str, ImageData] = {}


def _dataset(spec: dict[str, Any], device: torch.device) -> ImageData:
    key = repr((sorted(spec.items()), str(device)))
    if key not in _DATA:
        _DATA.clear()
        _release_memory(device)
        data = load_dataset(**spec)
        if device.type == "cuda":  # the search never reads the test split
            data = replace(data, train_x=data.train_x.to(device), train_y=data.train_y.to(device),
                           val_x=data.val_x.to(device), val_y=data.val_y.to(device), test_x=None, test_y=None)
        _DATA[key] = data
    return _DATA[key]


def _data_bytes(data: ImageData) -> int:
    return sum(t.untyped_storage().nbytes() for t in (data.train_x, data.train_y, data.val_x, data.val_y))


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _release_memory(device: torch.device) -> None:
    """Give back what finished trials left: cycles (models referenced from tracebacks and closures),
    glibc's freed-but-kept heap pages (without malloc_trim a reused worker's RSS only grows), and on
    CUDA the caching allocator's blocks, so packed siblings can use them."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _node_id() -> str:
    """Which Ray node trains this trial (recorded so cluster runs can be audited)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (e.g. called directly in a test)
        return ""


def train_candidate(config: dict[str, Any]) -> None:
    """config: trial, arch (JSON), run_dir, data (load_dataset kwargs), train (TrainConfig kwargs), evaluator
    (a registered name), keep_weights, threads, cores (None, or the cores left to training when the
    latency measurer has cores of its own: cspnas.search.measurer), int8 (None, or calibration_images and seed),
    worker_trials (0: train here; N: in a trainer process replaced after N trials, cspnas.search.worker)."""
    if config.get("worker_trials"):
        from cspnas.search.worker import run_in_trainer

        run_in_trainer({**config, "node": _node_id()}, tune.report)
    else:
        run_trial(config, tune.report)


def run_trial(config: dict[str, Any], emit) -> None:
    """Train one candidate (train_candidate's config) in this process; `emit` reports each result."""
    if config.get("cores"):
        os.sched_setaffinity(0, config["cores"])
    torch.set_num_threads(int(config["threads"]))
    cfg = TrainConfig(**config["train"])
    run_dir = Path(config["run_dir"])
    trial = int(config["trial"])
    device = resolve_device(cfg.device)
    _release_memory(device)  # what the previous trial on this reused worker left behind
    facts = {"worker_pid": os.getpid(), "node": config.get("node") or _node_id(), "retried_alone": False,
             "admission_wait_s": 0.0}
    history: list[float] = []
    start = time.perf_counter()
    gate_pass = None  # set while training holds the measurement gate

    def report(status: str, epoch: int, **extra: Any) -> None:
        with gate_pass.released() if gate_pass is not None else contextlib.nullcontext():
            emit({"trial": trial, "status": status, "epoch": epoch, **facts,
                         "worker_rss_mb": psutil.Process().memory_info().rss / 2**20,
                         "val_acc": history[-1] if history else 0.0, "val_acc_per_epoch": list(history),
                         "train_seconds": time.perf_counter() - start, **extra})

    def stopping() -> None:
        if (run_dir / ".locks" / STOP_FILE).exists():
            raise SearchStopping("the search is stopping")

    def attempt(alone: bool) -> None:
        nonlocal gate_pass
        data = _dataset(config["data"], device)
        arch = ArchConfig.from_json(config["arch"])
        need = trial_bytes(arch, data.input_size, cfg.batch_size, eval_batch_size(cfg, device), _data_bytes(data),
                           device.type)
        ledger = Ledger(run_dir / ".locks", this_device(device))
        with ledger.admitted(f"trial-{trial}", need, alone=alone, checkpoint=stopping) as waited:
            facts["admission_wait_s"] += waited
            evaluator = candidate_evaluator(config.get("evaluator", DEFAULT_EVALUATOR))
            rounds = evaluator.rounds(cfg)
            torch.manual_seed(cfg.seed)  # same arch + seed -> same initial weights
            model = build_model(arch)
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

            sync = torch.cuda.synchronize if device.type == "cuda" else None
            try:
                with MeasureGate(run_dir / ".locks", node=facts["node"]).training(before_pause=sync) as gate_pass:
                    evaluator.evaluate(model, data, cfg, on_round=on_epoch, step_hook=gate_pass.checkpoint)
            finally:
                gate_pass = None  # the gate is closed; reports from here on need no release

    try:
        oom = None
        try:
            attempt(alone=False)
        except torch.OutOfMemoryError as e:  # packed trials misjudged, or the candidate is too big: once alone
            oom = str(e).splitlines()[0]
        if oom is not None:
            history.clear()
            _release_memory(device)  # the failed attempt's model and tensors are garbage by now
            facts["retried_alone"] = True
            try:
                attempt(alone=True)
            except torch.OutOfMemoryError as e:
                report("failed", len(history), failure_reason="out of GPU memory, also when trained alone on its "
                                                              f"device: {str(e).splitlines()[0]}")
    except TrainingDiverged as e:
        report("failed", len(history), failure_reason=f"diverged: {e}")
    except MemoryError:
        report("failed", len(history), failure_reason="out of host memory")
    except Exception as e:  # a model that fails to build or run is a result, not a crash
        # (Tune stops a trial with SystemExit, which is not an Exception and passes through)
        report("failed", len(history), failure_reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        _release_memory(device)  # before the next trial is admitted beside us
