"""A latency model: per-feature costs fitted to a device's profile, stored as versioned JSON.

The prediction is `features(arch) . coef`: every feature is an additive count or size (see
features.py) and every coefficient a non-negative cost, fitted by (robustly reweighted)
non-negative least squares on the relative error (a 10% miss on a 0.5 ms network counts as much
as on a 20 ms one). Non-negative
costs keep predictions positive and monotone: a wider or deeper network is never predicted faster.

The file records what the model is valid for; `LatencyModel.applies_to` refuses, in one line, a
space, input size or latency setting (backend, precision, device, threads, batch, dtype) other than
the profiled one, and warns when only the number of input channels differs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cspnas.errors import CspnasError
from cspnas.fsutil import write_atomic
from cspnas.latency_model.features import FEATURES, arch_features
from cspnas.latency_model.profile import TIMING_ONLY, read_versioned
from cspnas.space import ArchConfig

MODEL_FORMAT, MODEL_VERSION = "cspnas latency model", 1
# latency settings a model is fitted for; a different value is refused, except these, which are warned
WARNED_SETTINGS = ("in_chs",)


def model_scope(latency: dict[str, Any]) -> dict[str, Any]:
    """The latency settings a model must match: all but how long to time (TIMING_ONLY)."""
    return {k: v for k, v in latency.items() if k not in TIMING_ONLY}


@dataclass
class LatencyModel:
    coef: list[float]
    valid_for: dict[str, Any]  # space, latency (model_scope: input size, backend, ...), fingerprint
    fit: dict[str, Any] = field(default_factory=dict)  # what it was fitted on and how well
    archs: list[str] = field(default_factory=list)  # hashes it was fitted on (check holds them out)
    features: tuple[str, ...] = FEATURES

    @property
    def band(self) -> float:
        """Relative distance from a limit within which a prediction is too close to call: the model's
        90th-percentile error where its fit recorded one, at least 10%."""
        return max(0.10, float((self.fit.get("in_sample") or {}).get("p90_abs_error") or 0.0))

    def predict_ms(self, arch: ArchConfig) -> float:
        return float(np.dot(arch_features(arch, self.valid_for["latency"]["input_size"]), self.coef))

    def predict_many(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return design_matrix(archs, self.valid_for["latency"]["input_size"]) @ np.asarray(self.coef)

    def to_dict(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "features": list(self.features),
                "coef": self.coef, "valid_for": self.valid_for, "fit": self.fit, "archs": self.archs}

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=1))

    def applies_to(self, space: str, latency: dict[str, Any], what: str = "the search") -> list[str]:
        """Refuse (one line) a space or latency setting the model was not fitted for; return warnings."""
        v = self.valid_for
        if space != v["space"]:
            raise CspnasError(f"latency model is for space {v['space']}, {what} uses {space}; "
                              "profile and fit a model for this space")
        want, have = model_scope(v["latency"]), model_scope(latency)
        warnings = []
        for key in sorted(set(want) | set(have)):
            if want.get(key) == have.get(key):
                continue
            if key in WARNED_SETTINGS:
                warnings.append(f"latency model was fitted with {key} {want.get(key)}, {what} uses {have.get(key)}; "
                                "its predictions extrapolate")
            else:
                raise CspnasError(f"latency model is for {key} {want.get(key)!r}, {what} uses {have.get(key)!r}; "
                                  f"use the model's setting or fit a model for {key} {have.get(key)!r}")
        return warnings


def design_matrix(archs: Sequence[ArchConfig], input_size: int) -> np.ndarray:
    return np.array([arch_features(a, input_size) for a in archs], dtype=float).reshape(len(archs), len(FEATURES))


def fit_coef(x: np.ndarray, y: np.ndarray, rounds: int = 5) -> np.ndarray:
    """Non-negative costs minimising the relative error of x @ coef against y, robustly: least squares
    reweighted `rounds` times by 1/sqrt(|error|) (towards the least absolute error), so a few
    timings inflated by background load pull the costs less than squares would let them."""
    from scipy.optimize import nnls

    scale = np.maximum(x.max(axis=0), 1e-12)  # columns of similar size: nnls converges on any profile
    a, weights = x / y[:, None] / scale, np.ones(len(y))
    for _ in range(rounds):
        coef, _ = nnls(a * weights[:, None], weights, maxiter=50 * x.shape[1])
        weights = 1 / np.sqrt(np.maximum(np.abs(a @ coef - 1), 0.05))  # errors under 5% all count alike
    return coef / scale


def accuracy(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share within +-10%, Spearman rank correlation, median relative bias, 90th percentile |error|."""
    rel = predicted / measured - 1
    return {"n": int(len(measured)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "spearman": spearman(predicted, measured), "median_bias": float(np.median(rel)),
            "p90_abs_error": float(np.quantile(np.abs(rel), 0.9)) if len(rel) else float("nan")}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return float("nan")
    import pandas as pd

    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def fit_model(archs: Sequence[ArchConfig], latencies_ms: Sequence[float], valid_for: dict[str, Any],
              sources: dict[str, Any]) -> LatencyModel:
    """Fit on (arch, measured latency) pairs; `sources` (profile and run paths) is recorded."""
    if len(archs) < len(FEATURES):
        raise CspnasError(f"{len(archs)} measured architectures are too few to fit {len(FEATURES)} costs; "
                          f"profile at least {len(FEATURES)} (--n 300 is the usual)")
    x = design_matrix(archs, valid_for["latency"]["input_size"])
    y = np.asarray(latencies_ms, dtype=float)
    coef = fit_coef(x, y)
    return LatencyModel(coef=[float(c) for c in coef], valid_for=valid_for,
                        fit={**sources, "in_sample": accuracy(x @ coef, y)}, archs=[a.arch_hash() for a in archs])


def load_model(path: str | Path) -> LatencyModel:
    """A model file, or one line saying what is wrong with it (exit 2 at the CLI)."""
    data = read_versioned(path, "latency model", MODEL_FORMAT, MODEL_VERSION,
                          make="make one with `cspnas latency fit`", redo="fit it again with `cspnas latency fit`")
    if data.get("features") != list(FEATURES):
        raise CspnasError(f"{path}: latency model has other features than this cspnas computes; fit it again")
    coef, valid = data.get("coef"), data.get("valid_for")
    if not (isinstance(coef, list) and len(coef) == len(FEATURES)
            and all(isinstance(c, (int, float)) and c >= 0 for c in coef)):
        raise CspnasError(f"{path}: latency model coefficients are malformed; fit it again")
    if not (isinstance(valid, dict) and all(k in valid for k in ("space", "latency", "fingerprint"))
            and isinstance(valid["latency"], dict) and "input_size" in valid["latency"]):
        raise CspnasError(f"{path}: latency model does not say what it is valid for; fit it again")
    return LatencyModel(coef=[float(c) for c in coef], valid_for=valid, fit=data.get("fit") or {},
                        archs=list(data.get("archs") or []))
