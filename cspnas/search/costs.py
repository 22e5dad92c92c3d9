"""A candidate's cost, measured once per architecture, before it is trained."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
import torch

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency, measure_peak_memory
from cspnas.models import build_model
from cspnas.search.gate import MeasureGate
from cspnas.space import ArchConfig


@dataclass
class CostMeter:
    """Params, MACs (fvcore), latency and peak activation memory of an architecture, cached by arch hash.

    Latency is measured inside the MeasureGate, i.e. with every training trial paused
    (gate None: nothing is training, e.g. before the search starts). Every number is
    recorded for every candidate, feasible or not; the keys are the objectives' columns. An int8
    model ONNX Runtime cannot quantize raises QuantizationError (the candidate fails, the search goes on).
    """

    latency: LatencySettings
    gate: MeasureGate | None
    input_size: int
    calibration: np.ndarray | None = None  # int8 latency: the training images it is calibrated on
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def remember(self, study: optuna.Study) -> None:
        """Seed the cache from a study's trials (resume): identical archs are never re-measured."""
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            if "arch_hash" in a and "macs" in a:
                self._cache[a["arch_hash"]] = {k: a.get(k) for k in _KEYS}

    def measure(self, arch: ArchConfig) -> dict[str, Any]:
        key = arch.arch_hash()
        if key not in self._cache:
            self._cache[key] = self._measure(arch)
        return dict(self._cache[key])

    def _measure(self, arch: ArchConfig) -> dict[str, Any]:
        start = time.perf_counter()
        torch.manual_seed(0)
        model = build_model(arch)
        params = count_params(model)
        macs = count_macs(model, in_chs=arch.in_chs, input_size=self.input_size).total
        settings = replace(self.latency, in_chs=arch.in_chs, input_size=self.input_size)
        with self.gate.exclusive() if self.gate is not None else contextlib.nullcontext():
            lat = measure_latency(model, settings, self.calibration)
        memory = measure_peak_memory(model, replace(settings, batch_size=1)).activation_bytes
        return {"params": params, "macs": macs, "latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms,
                "latency_runs": lat.runs, "latency_noisy": lat.noisy, "latency_backend": lat.backend,
                "memory_bytes": memory, "cost_seconds": time.perf_counter() - start}


_KEYS = ("params", "macs", "latency_ms", "latency_iqr_ms", "latency_runs", "latency_noisy", "latency_backend",
         "memory_bytes", "cost_seconds")
