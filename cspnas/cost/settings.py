"""Measurement settings: every latency/memory number is stored next to one of these."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from cspnas.cost.timing import DEFAULT_STATISTIC, STATISTICS
from cspnas.errors import CspnasError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names
PRECISIONS = ("fp32", "int8")  # int8: ONNX Runtime static quantization (the onnxruntime backend)
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
# Sane bounds, checked before anything is allocated: beyond them a measurement says nothing
# about a deployed model, and memory runs out long before the timing ends.
MAX_BATCH_SIZE = 1024
MAX_INPUT_SIZE = 4096


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LatencySettings:
    """How a model is run when timed: the "deployed" setting, not the training one.

    The model is deep-copied, cast to ``dtype`` (weights and input alike, no autocast),
    optionally converted to channels_last, moved to ``device`` and run in eval +
    inference mode on a batch of ``batch_size`` x ``in_chs`` x ``input_size``².
    ``threads`` is the torch intra-op thread count during timing (restored afterwards).
    """

    backend: str = "torch"  # how it is timed: a registered LatencyBackend (cspnas.cost.backends)
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    batch_size: int = 1
    in_chs: int = 3
    input_size: int = 32  # square input, H = W
    threads: int = 1  # torch intra-op threads while timing (1: stable on shared machines)
    dtype: str = "float32"  # "float32" | "bfloat16" | "float16" (cuda only)
    channels_last: bool = False
    min_run_time_s: float = 0.2  # timing budget; at least 4 timed blocks are taken anyway
    warmup: int = 3  # untimed calls first; one is always made, to fail fast on a bad input
    precision: str = "fp32"  # "fp32" | "int8" (QDQ static quantization; onnxruntime backend only)
    calibration_images: int = 32  # int8: images the quantizer calibrates on (a search: training images)
    calibration_seed: int = 0  # int8: which images (a search: its --seed)
    statistic: str = DEFAULT_STATISTIC  # what the per-call times are summarized by (cspnas.cost.timing)

    def __post_init__(self) -> None:
        # Static checks only; whether a GPU is visible is checked when measuring,
        # so settings can be built and stored on a CPU-only machine.
        from cspnas.cost.backends import check_latency_backend

        check_latency_backend(self.backend)
        match = _DEVICE_RE.match(self.device) if isinstance(self.device, str) else None
        if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
            raise CspnasError(f"unknown device {self.device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        for name in ("batch_size", "in_chs", "input_size", "threads", "calibration_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CspnasError(f"latency setting {name} must be an integer >= 1, got {value!r}")
        for name, cap, what in (("batch_size", MAX_BATCH_SIZE, "at most"), ("input_size", MAX_INPUT_SIZE, "at most"),
                                ("threads", cpu_cores(), "at most this machine's CPU core count,")):
            if getattr(self, name) > cap:
                raise CspnasError(f"latency setting {name} must be {what} {cap}, got {getattr(self, name)}; "
                                  f"use a smaller value")
        for name in ("warmup", "calibration_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CspnasError(f"latency setting {name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.min_run_time_s, (int, float)) or not self.min_run_time_s > 0:
            raise CspnasError(f"latency setting min_run_time_s must be > 0 seconds, got {self.min_run_time_s!r}")
        if self.dtype not in DTYPES:
            raise CspnasError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.dtype == "float16" and self.device == "cpu":
            raise CspnasError("float16 latency is only supported on cuda; use --dtype bfloat16 or float32 on cpu")
        if not isinstance(self.channels_last, bool):
            raise CspnasError(f"latency setting channels_last must be true or false, got {self.channels_last!r}")
        if self.statistic not in STATISTICS:
            raise CspnasError(f"unknown latency statistic {self.statistic!r}; use one of {', '.join(STATISTICS)}")
        if self.precision not in PRECISIONS:
            raise CspnasError(f"unknown latency precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.precision == "int8" and self.backend != "onnxruntime":
            raise CspnasError("int8 latency is ONNX Runtime's static quantization; use the onnxruntime latency "
                              "backend with it (search: --latency-backend, inspect: --backend) or precision fp32")
        if self.backend == "onnxruntime" and (self.device != "cpu" or self.dtype != "float32" or self.channels_last):
            raise CspnasError("the onnxruntime backend times float32 ONNX on the CPU (int8 via the precision "
                              "setting); use device cpu, dtype float32 and no channels_last with it, or the torch "
                              "backend")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch  # here, not at the top: the CLI reads these settings' defaults without torch

        return getattr(torch, self.dtype)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, self.in_chs, self.input_size, self.input_size)

    def torch_device(self) -> torch.device:
        """The device to run on; raises CspnasError if it is not visible on this machine."""
        import torch

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise CspnasError("cuda requested but no GPU is visible; use --device cpu")
            index = int(self.device.partition(":")[2] or torch.cuda.current_device())
            if index >= torch.cuda.device_count():
                raise CspnasError(
                    f"device {self.device} requested but only {torch.cuda.device_count()} GPU(s) are visible; "
                    "use a lower index"
                )
            return torch.device("cuda", index)
        return torch.device("cpu")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencySettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CspnasError(f"unknown latency setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
