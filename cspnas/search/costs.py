"""A candidate's cost, measured once per architecture, before it is trained."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import optuna
import torch

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency, measure_peak_memory
from cspnas.cost.zero_cost import COLUMNS as SCORE_COLUMNS, zero_cost_scores
from cspnas.latency_model.model import LatencyModel
from cspnas.models import build_model
from cspnas.search.gate import MeasureGate
from cspnas.search.measurer import fingerprint_here, fingerprint_id, latency_record
from cspnas.space import ArchConfig


@dataclass
class CostMeter:
    """Params, MACs (fvcore), latency, peak activation memory and zero-cost scores of an architecture,
    cached by arch hash.

    Latency is timed by `measurer`, the search's measuring actor (cspnas.search.measurer), which
    pauses the trainers it shares cores with (`pause_trainers`) while it times; without a measurer it
    is timed here, inside the MeasureGate. `gate` None: nothing is training (e.g. before the search
    starts), so nothing is paused. Every number but the zero-cost scores (feasible candidates only, see
    `measure`) is recorded for every candidate, feasible or not;
    the keys are the objectives' columns. An int8
    model ONNX Runtime cannot quantize raises QuantizationError (the candidate fails, the search goes on).
    `cost_wait_seconds` is the part of `cost_seconds` spent waiting for the trainers to pause (where the
    latency is timed: here or in the measurer); `spent` sums both over the candidates this meter measured
    (the driver's accounting). The zero-cost scores (cspnas.cost.zero_cost, `zc_*`) are computed on
    `score_batch` (images, labels) after the latency, outside the gate, on copies of the model; without
    a batch they are not computed. A remembered trial without scores (a run from before them)
    gets them computed when its architecture is measured again.
    """

    latency: LatencySettings
    gate: MeasureGate | None
    input_size: int
    measurer: Any = None  # a Ray actor handle of cspnas.search.measurer.Measurer
    pause_trainers: bool = True  # the measurer shares cores (or a GPU) with trainers: pause them while timing
    calibration: np.ndarray | None = None  # int8 latency: the training images it is calibrated on
    predictor: LatencyModel | None = None  # --latency-model: latency predicted from the config, not measured
    confirm_near_ms: float | None = None  # --confirm-latency: time candidates predicted within the model's error of it
    score_batch: tuple[torch.Tensor, torch.Tensor] | None = None  # zero-cost scores: training images and labels
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    _here: str | None = None  # fingerprint id of this process, when it times
    spent: dict[str, float] = field(default_factory=lambda: {"cost_seconds": 0.0, "cost_wait_seconds": 0.0})

    def remember(self, study: optuna.Study) -> None:
        """Seed the cache from a study's trials (resume): identical archs are never re-measured."""
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            if "arch_hash" in a and "macs" in a:  # scores only where recorded (see measure)
                self._cache[a["arch_hash"]] = {k: a.get(k) for k in _KEYS if k in a or k not in SCORE_COLUMNS}

    def measure(self, arch: ArchConfig, *, scores: bool = True) -> dict[str, Any]:
        """The candidate's cost; `scores=False` leaves the zero-cost scores out (the search scores only
        feasible candidates: an infeasible one is never trained or prefiltered, and its scores would cost
        about as much as the rest of its cost). Asked again with scores, they are added to the cache."""
        key = arch.arch_hash()
        if key not in self._cache:
            self._cache[key] = self._measure(arch)
        if scores and self.score_batch is not None and any(c not in self._cache[key] for c in SCORE_COLUMNS):
            start = time.perf_counter()
            torch.manual_seed(0)  # the weights _measure scores would have seen
            self._cache[key].update(self.scores(build_model(arch)))
            seconds = time.perf_counter() - start
            self._cache[key]["cost_seconds"] = (self._cache[key].get("cost_seconds") or 0.0) + seconds
            self.spent["cost_seconds"] += seconds
        return dict(self._cache[key])

    def scores(self, model: torch.nn.Module) -> dict[str, float | None]:
        """The zero-cost scores of a model built as `_measure` builds it (none without a batch: a meter
        sharing this one's cache with a batch computes them when it measures the architecture)."""
        if self.score_batch is None:
            return {}
        return zero_cost_scores(model, *self.score_batch)

    def settings_for(self, arch: ArchConfig) -> LatencySettings:
        return replace(self.latency, in_chs=arch.in_chs, input_size=self.input_size)

    def time(self, arch: ArchConfig, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """Latency fields of `arch` (latency_ms, latency_iqr_ms, ..., measured_on)."""
        settings = self.settings_for(arch)
        if self.measurer is not None:
            import ray

            call = self.measurer.latency.remote(arch.to_json(indent=None), settings.to_dict(),
                                                self.gate is not None and self.pause_trainers)
            try:
                return ray.get(call)
            except ray.exceptions.RayTaskError as e:  # the measurer's own error (e.g. a CspnasError), not Ray's
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
        if model is None:
            torch.manual_seed(0)
            model = build_model(arch)
        if self._here is None:
            self._here = fingerprint_id(fingerprint_here(settings))
        lat, waited = self._paused(lambda: measure_latency(model, settings, self.calibration))
        return {**latency_record(lat, self._here), "cost_wait_seconds": waited}

    def confirm(self, arch_jsons: list[str], passes: int) -> list[dict[str, Any]]:
        """Re-time architectures in `passes` interleaved passes (Measurer.confirm), ungated: for the end
        of a search, when nothing trains. Returns latency_confirmed_* fields per architecture."""
        settings = replace(self.latency, input_size=self.input_size).to_dict()
        if self.measurer is not None:
            import ray

            return ray.get(self.measurer.confirm.remote(arch_jsons, settings, passes))
        from cspnas.search.measurer import Measurer

        return Measurer(None, "", settings, self.calibration).confirm(arch_jsons, settings, passes)

    def _measure(self, arch: ArchConfig) -> dict[str, Any]:
        start = time.perf_counter()
        torch.manual_seed(0)
        model = build_model(arch)
        params = count_params(model)
        macs = count_macs(model, in_chs=arch.in_chs, input_size=self.input_size).total
        if self.predictor is None:
            latency = self.timed(arch, model)
        else:
            predicted = self.predictor.predict_ms(arch)
            latency = {"latency_ms": predicted, "latency_iqr_ms": None, "latency_runs": 0, "latency_noisy": False,
                       "latency_backend": {"name": "predicted", "space": self.predictor.valid_for["space"],
                                           "device": self.predictor.valid_for["fingerprint"].get("cpu")},
                       "latency_source": "predicted"}
            if self.confirm_near_ms is not None and abs(predicted / self.confirm_near_ms - 1) <= self.predictor.band:
                latency = self.timed(arch, model)
            latency["latency_predicted_ms"] = predicted
        memory = measure_peak_memory(model, replace(self.settings_for(arch), batch_size=1)).activation_bytes
        seconds = time.perf_counter() - start
        waited = latency.setdefault("cost_wait_seconds", 0.0)
        self.spent["cost_seconds"] += seconds
        self.spent["cost_wait_seconds"] += waited
        return {"params": params, "macs": macs, **latency, "memory_bytes": memory, "cost_seconds": seconds}

    def timed(self, arch: ArchConfig, model: torch.nn.Module | None = None) -> dict[str, Any]:
        """The ordinary latency measurement (`time`: where the search measures), marked as measured."""
        lat = self.time(arch, model)
        return {**lat, "latency_measured_ms": lat["latency_ms"], "latency_source": "measured"}

    def confirm_predicted(self, arch: ArchConfig) -> dict[str, Any]:
        """--confirm-latency for a candidate costed with a predicted latency: time it now; the measured
        latency replaces the prediction (in the cache too)."""
        measured = self.timed(arch)
        self._cache.get(arch.arch_hash(), {}).update(measured)
        return measured

    def _paused(self, measure: Callable[[], Any]) -> tuple[Any, float]:
        """measure() with every trainer paused (the gate); also the seconds spent waiting for them to pause."""
        start = time.perf_counter()
        with self.gate.exclusive() if self.gate is not None else contextlib.nullcontext():
            waited = time.perf_counter() - start
            return measure(), waited


_KEYS = ("params", "macs", "latency_ms", "latency_iqr_ms", "latency_runs", "latency_noisy", "latency_backend",
         "measured_on", "latency_predicted_ms", "latency_measured_ms", "latency_source", "memory_bytes",
         "cost_seconds", "cost_wait_seconds", *SCORE_COLUMNS)
