"""Wall-clock latency of one forward pass, measured with torch.utils.benchmark."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.benchmark import Timer

from cspnas.cost._runtime import deployed_copy, first_line, synchronize, torch_threads
from cspnas.cost.backends import LatencyBackend, Timing, latency_backend, register_latency_backend
from cspnas.cost.settings import LatencySettings
from cspnas.errors import CspnasError


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency under ``settings``, as measured by the backend ``backend`` describes.

    torch eager (the "torch" backend) times blocks of ``number_per_run`` calls; ``median_ms``
    and ``iqr_ms`` are over the per-call mean of each block. ``runs`` is the total number of
    timed forward passes (number_per_run x number of blocks, at least 4 blocks), warm-up
    excluded. ``noisy`` is benchmark's own flag: IQR above 10% of the median.
    """

    median_ms: float
    iqr_ms: float
    runs: int
    noisy: bool
    settings: LatencySettings
    backend: dict = field(default_factory=dict)  # LatencyBackend.describe(): name, versions, options

    def to_dict(self) -> dict:
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "runs": self.runs,
            "noisy": self.noisy,
            **self.settings.to_dict(),
            "backend_info": json.dumps(self.backend, sort_keys=True),  # a string: rows stay flat
        }


def run_forward(model: nn.Module, x: torch.Tensor) -> None:
    """One forward pass, turning a shape/dtype failure into a user-facing error."""
    try:
        model(x)
    except RuntimeError as e:
        raise CspnasError(
            f"model failed on an input of shape {tuple(x.shape)} ({x.dtype}, {x.device}): {first_line(e)}; "
            "check in_chs/input_size/dtype"
        ) from e


@register_latency_backend
class TorchEagerBackend(LatencyBackend):
    """PyTorch eager mode, timed with torch.utils.benchmark (the default backend)."""

    name = "torch"

    def describe(self, settings: LatencySettings) -> dict:
        return {"name": self.name, "torch": torch.__version__, "timer": "torch.utils.benchmark adaptive_autorange",
                "options": {"warmup": settings.warmup, "min_run_time_s": settings.min_run_time_s,
                            "channels_last": settings.channels_last}}

    def measure(self, model: nn.Module, settings: LatencySettings, calibration=None) -> Timing:
        clone, x = deployed_copy(model, settings)
        # Timer fixes the thread count itself and synchronizes CUDA around each block;
        # inference_mode is thread-local and Timer runs in this thread, so it applies.
        timer = Timer(stmt="model(x)", globals={"model": clone, "x": x}, num_threads=settings.threads)
        with torch.inference_mode():
            with torch_threads(settings.threads):
                # Explicit warm-up: first calls pay for allocator growth, oneDNN/cuDNN algorithm
                # selection and lazy init, which are not part of steady-state latency.
                for _ in range(max(settings.warmup, 1)):
                    run_forward(clone, x)
                synchronize(x.device)
            # This is blocked_autorange (blocks of calls until min_run_time is spent) that also
            # insists on >= 4 blocks: blocked_autorange alone stops after ONE block when a single
            # call exceeds the budget (big model, or a stall on a busy machine), and reports that
            # one sample with IQR 0. An infinite threshold disables the adaptive IQR-driven extension.
            measurement = timer.adaptive_autorange(
                threshold=math.inf, min_run_time=settings.min_run_time_s, max_run_time=None
            )
        return Timing(median_ms=measurement.median * 1e3, iqr_ms=measurement.iqr * 1e3,
                      runs=measurement.number_per_run * len(measurement.raw_times), noisy=measurement.has_warnings)


def measure_latency(model: nn.Module, settings: LatencySettings = LatencySettings(),
                    calibration: np.ndarray | None = None) -> Latency:
    """Median forward latency of a deployed copy of ``model`` (the caller's model is untouched),
    timed by the backend ``settings.backend`` names. ``calibration``: normalised training images
    an int8 model is calibrated on (default: seeded random images; the record says which)."""
    backend = latency_backend(settings.backend)
    timing = backend.measure(model, settings, calibration)
    info = backend.describe(settings)
    if settings.precision == "int8":
        info["calibration_source"] = "random normal" if calibration is None else "training images"
    return Latency(median_ms=timing.median_ms, iqr_ms=timing.iqr_ms, runs=timing.runs, noisy=timing.noisy,
                   settings=settings, backend=info)
