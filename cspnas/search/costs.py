"""A candidate's cost, measured once per architecture, before it is trained."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

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
    recorded for every candidate, feasible or not; the keys are the objectives' columns.
    `cost_wait_seconds` is the part of `cost_seconds` spent waiting for the trainers to pause;
    `spent` sums both over the candidates this meter measured (the driver's accounting).
    """

    latency: LatencySettings
    gate: MeasureGate | None
    input_size: int
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=lambda: {"cost_seconds": 0.0, "cost_wait_seconds": 0.0})

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
        lat, waited = self._paused(lambda: measure_latency(model, settings))
        memory = measure_peak_memory(model, replace(settings, batch_size=1)).activation_bytes
        seconds = time.perf_counter() - start
        self.spent["cost_seconds"] += seconds
        self.spent["cost_wait_seconds"] += waited
        return {"params": params, "macs": macs, "latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms,
                "latency_runs": lat.runs, "latency_noisy": lat.noisy, "latency_backend": lat.backend,
                "memory_bytes": memory, "cost_seconds": seconds, "cost_wait_seconds": waited}

    def _paused(self, measure: Callable[[], Any]) -> tuple[Any, float]:
        """measure() with every trainer paused (the gate); also the seconds spent waiting for them to pause."""
        start = time.perf_counter()
        with self.gate.exclusive() if self.gate is not None else contextlib.nullcontext():
            waited = time.perf_counter() - start
            return measure(), waited


_KEYS = ("params", "macs", "latency_ms", "latency_iqr_ms", "latency_runs", "latency_noisy", "latency_backend",
         "memory_bytes", "cost_seconds", "cost_wait_seconds")
