"""Fault injection for crash tests. Unset (always, outside tests) each hook costs one dict lookup.

`CSPNAS_KILL_AT=point[:n]` SIGKILLs the driver at the n-th (default 1st) time it reaches
`point`. Points: after_config, trial_started, trial_told, between_tables, finishing, finalist_epoch
(a finalist's epoch is checkpointed).

`CSPNAS_TEST_FAULT=kind@trial[xN],...` makes a Ray worker fail at the end of that trial's first
epoch: kind `exit` kills the worker process (os._exit), `host-oom` raises MemoryError,
`gpu-oom` raises torch.OutOfMemoryError. `xN` fires only on the first N attempts (Ray retries a
trial whose worker died); each firing leaves RUN/.faults/<trial>.<attempt>, so a test can
count the attempts. Kind `quantize` fails that trial's int8 quantization in the driver's cost step
(the candidate is recorded as failed with the reason; the search goes on).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("CSPNAS_KILL_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _faults(kind: str) -> set[int]:
    """Trials CSPNAS_TEST_FAULT names for `kind`."""
    spec = os.environ.get("CSPNAS_TEST_FAULT", "")
    return {int(t.partition("x")[0]) for k, _, t in (i.strip().partition("@") for i in spec.split(",") if i.strip())
            if k == kind}


def cost_fault(trial: int) -> None:
    if trial in _faults("quantize"):
        from cspnas.cost.onnx_runtime import QuantizationError

        raise QuantizationError("ONNX Runtime could not quantize the model to int8: injected by CSPNAS_TEST_FAULT")


def trial_fault(run_dir: Path, trial: int) -> None:
    spec = os.environ.get("CSPNAS_TEST_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        kind, _, target = item.strip().partition("@")
        number, _, times = target.partition("x")
        if int(number) != trial or kind == "quantize":  # quantize: cost_fault's, before training
            continue
        marks = run_dir / ".faults"
        marks.mkdir(exist_ok=True)
        attempt = 1 + sum(1 for _ in marks.glob(f"{trial}.*"))
        if times and attempt > int(times):
            return
        (marks / f"{trial}.{attempt}").touch()
        if kind == "exit":
            os._exit(1)
        if kind == "host-oom":
            raise MemoryError()
        if kind == "gpu-oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        raise ValueError(f"CSPNAS_TEST_FAULT: unknown kind {kind!r}")
