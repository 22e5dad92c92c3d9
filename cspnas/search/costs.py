"""A candidate's cost, measured once per architecture, before it is trained."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import torch

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency, measure_peak_memory
from cspnas.latency_model.model import LatencyModel
from cspnas.models import build_model
from cspnas.search.gate import MeasureGate
from cspnas.space import ArchConfig


@dataclass
class CostMeter:
    """Params, MACs (fvcore), latency and peak activation memory of an architecture, cached by arch hash.

    Latency is measured inside the MeasureGate, i.e. with every training trial paused
    (gate None: nothing is training, e.g. before the search starts). Every number is
    recorded for every candidate, feasible or not; the keys are the objectives' columns.
    """

    latency: LatencySettings
    gate: MeasureGate | None
    input_size: int
    predictor: LatencyModel | None = None  # --latency-model: latency predicted from the config, not measured
    confirm_near_ms: float | None = None  # --confirm-latency: time candidates predicted within the model's error of it
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
        if self.predictor is None:
            latency = self.timed(model, arch.in_chs)
        else:
            predicted = self.predictor.predict_ms(arch)
            latency = {"latency_ms": predicted, "latency_iqr_ms": None, "latency_runs": 0, "latency_noisy": False,
                       "latency_backend": {"name": "predicted", "space": self.predictor.valid_for["space"],
                                           "device": self.predictor.valid_for["fingerprint"].get("cpu")},
                       "latency_source": "predicted"}
            if self.confirm_near_ms is not None and abs(predicted / self.confirm_near_ms - 1) <= self.predictor.band:
                latency = self.timed(model, arch.in_chs)
            latency["latency_predicted_ms"] = predicted
        memory = measure_peak_memory(model, replace(settings, batch_size=1)).activation_bytes
        return {"params": params, "macs": macs, **latency, "memory_bytes": memory,
                "cost_seconds": time.perf_counter() - start}

    def timed(self, model: torch.nn.Module, in_chs: int) -> dict[str, Any]:
        """The ordinary latency measurement of a built candidate, with every training trial paused."""
        settings = replace(self.latency, in_chs=in_chs, input_size=self.input_size)
        with self.gate.exclusive() if self.gate is not None else contextlib.nullcontext():
            lat = measure_latency(model, settings)
        return {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "latency_runs": lat.runs,
                "latency_noisy": lat.noisy, "latency_backend": lat.backend, "latency_measured_ms": lat.median_ms,
                "latency_source": "measured"}

    def confirm(self, arch: ArchConfig) -> dict[str, Any]:
        """--confirm-latency for a candidate costed with a predicted latency: time it now; the measured
        latency replaces the prediction (in the cache too)."""
        torch.manual_seed(0)
        measured = self.timed(build_model(arch), arch.in_chs)
        self._cache.get(arch.arch_hash(), {}).update(measured)
        return measured


_KEYS = ("params", "macs", "latency_ms", "latency_iqr_ms", "latency_runs", "latency_noisy", "latency_backend",
         "latency_predicted_ms", "latency_measured_ms", "latency_source", "memory_bytes", "cost_seconds")
