"""Wall-clock latency of one forward pass: the Latency record and the torch eager backend."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cspnas.cost._runtime import deployed_copy, first_line, synchronize, torch_threads
from cspnas.cost.backends import LatencyBackend, Timing, latency_backend, register_latency_backend
from cspnas.cost.settings import LatencySettings
from cspnas.cost.timing import summarize, time_calls
from cspnas.errors import CspnasError


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency under ``settings``, as measured by the backend ``backend`` describes.

    Every backend times single calls after warm-up (cspnas.cost.timing): ``ms`` is
    ``settings.statistic`` of the per-call times (default the fastest call), ``iqr_ms``
    their interquartile range, ``runs`` the number of timed calls. ``noisy``: IQR above 10% of
    the median (torch.utils.benchmark's rule).
    """

    ms: float
    iqr_ms: float
    runs: int
    noisy: bool
    settings: LatencySettings
    backend: dict = field(default_factory=dict)  # LatencyBackend.describe(): name, versions, options

    def to_dict(self) -> dict:
        return {
            "ms": self.ms,
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
    """PyTorch eager mode, timed call by call (cspnas.cost.timing); LatencySettings' default backend (a search on
    cpu float32 latency uses onnxruntime)."""

    name = "torch"

    def describe(self, settings: LatencySettings) -> dict:
        return {"name": self.name, "torch": torch.__version__, "timer": "perf_counter per call",
                "statistic": settings.statistic,
                "options": {"warmup": settings.warmup, "min_run_time_s": settings.min_run_time_s,
                            "channels_last": settings.channels_last}}

    def measure(self, model: nn.Module, settings: LatencySettings, calibration=None) -> Timing:
        clone, x = deployed_copy(model, settings)
        sync = (lambda: synchronize(x.device)) if x.device.type == "cuda" else None
        # inference_mode is thread-local and the calls run in this thread, so it applies. Every call
        # goes through run_forward, so a bad input fails as one line at the first warm-up call.
        with torch.inference_mode(), torch_threads(settings.threads):
            times = time_calls(lambda: run_forward(clone, x), settings.warmup, settings.min_run_time_s, sync)
        return summarize(times, settings.statistic)


def measure_latency(model: nn.Module, settings: LatencySettings = LatencySettings(),
                    calibration: np.ndarray | None = None) -> Latency:
    """Forward latency (``settings.statistic`` of single calls) of a deployed copy of ``model`` (the
    caller's model is untouched), timed by the backend ``settings.backend`` names. ``calibration``: normalised training images
    an int8 model is calibrated on (default: seeded random images; the record says which)."""
    backend = latency_backend(settings.backend)
    timing = backend.measure(model, settings, calibration)
    info = backend.describe(settings)
    if settings.precision == "int8":
        info["calibration_source"] = "random normal" if calibration is None else "training images"
    return Latency(ms=timing.ms, iqr_ms=timing.iqr_ms, runs=timing.runs, noisy=timing.noisy,
                   settings=settings, backend=info)
