"""Latency backends: how a model's forward pass is timed (torch eager, or the exported ONNX in ONNX Runtime).

A backend is a small class with a `name`, `describe(settings)` (what produced the numbers:
name, library versions, options; stored with every latency) and `measure(model, settings)`.
`LatencySettings.backend` picks one by name; add one with `@register_latency_backend`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cspnas.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from cspnas.cost.settings import LatencySettings


@dataclass(frozen=True)
class Timing:
    """What a backend measured: the latency statistic (cspnas.cost.timing) and the IQR of the per-call
    times, timed calls, the noise flag (IQR above 10% of the median)."""

    ms: float
    iqr_ms: float
    runs: int
    noisy: bool


class LatencyBackend(ABC):
    """Times the forward pass of a model under LatencySettings (device, batch, dtype, threads, ...).

    `measure` must leave the caller's model untouched, take at least 4 timed samples, and raise
    CspnasError (one line: what failed, what to do) for an input or device it cannot run.
    """

    name: ClassVar[str]

    @abstractmethod
    def describe(self, settings: LatencySettings) -> dict[str, Any]:
        """{"name": ..., library versions, options}: stored next to every latency it measures."""

    @abstractmethod
    def measure(self, model: nn.Module, settings: LatencySettings, calibration: np.ndarray | None = None) -> Timing:
        """Forward latency of `model` as deployed under `settings` (single calls timed by
        cspnas.cost.timing.time_calls, summarized by `summarize` with `settings.statistic`);
        `calibration` (normalised images, N x C x H x W) is for backends that quantize (int8),
        ignored by the others."""


LATENCY_BACKENDS = Registry("latency backend", "a LatencyBackend registered in cspnas/cost/",
                            {"torch": "cspnas.cost.latency:TorchEagerBackend",
                             "onnxruntime": "cspnas.cost.onnx_runtime:OnnxRuntimeBackend"})
register_latency_backend = LATENCY_BACKENDS.register  # class decorator: LatencySettings(backend=cls.name)
check_latency_backend = LATENCY_BACKENDS.check


def latency_backend(name: str) -> LatencyBackend:
    return LATENCY_BACKENDS.create(name)
