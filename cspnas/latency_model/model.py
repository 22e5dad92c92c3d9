"""A latency model: per-feature costs fitted to a device's profile, and a bounded correction for
what a sum of costs misses; stored as versioned JSON (no pickle).

The prediction is `features(arch) . coef`, times a correction factor. Every feature is an additive
count or size (see features.py) and every coefficient a non-negative cost, fitted by (robustly
reweighted) non-negative least squares on the relative error (a 10% miss on a 0.5 ms network counts
as much as on a 20 ms one); non-negative costs keep that part positive and monotone. The correction
is scikit-learn gradient boosting (small trees) on the log of measured over out-of-fold predicted
latency, from the same features plus the additive prediction, clipped to +-CORRECTION["clip"]: it
learns interactions a sum cannot (how ops of one network share caches, which shapes the runtime
fuses); experiments/latency_model.py reports held-out accuracy with and without it. The trees are
stored as plain arrays and evaluated here, so the file is JSON.

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

MODEL_FORMAT, MODEL_VERSION = "cspnas latency model", 2  # 2: fitted on version-2 profiles (see profile.py)
# latency settings a model is fitted for; a different value is refused, except these, which are warned
WARNED_SETTINGS = ("in_chs",)
# the correction's gradient boosting; below min_archs profiled architectures the model is the sum alone
CORRECTION = {"trees": 150, "depth": 3, "learning_rate": 0.05, "subsample": 0.8, "min_leaf": 10,
              "clip": 0.15, "min_archs": 100, "folds": 5, "seed": 0}


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
    correction: dict[str, Any] | None = None  # fit_correction's trees, or None (the sum alone)

    @property
    def band(self) -> float:
        """Relative distance from a limit within which a prediction is too close to call: the model's
        90th-percentile error where its fit recorded one, at least 10%."""
        errors = self.fit.get("cross_validated") or self.fit.get("in_sample") or {}
        return max(0.10, float(errors.get("p90_abs_error") or 0.0))

    def predict_ms(self, arch: ArchConfig) -> float:
        return float(self.predict_features(np.array([arch_features(arch, self.valid_for["latency"]["input_size"])]))[0])

    def predict_many(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return self.predict_features(design_matrix(archs, self.valid_for["latency"]["input_size"]))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Latency (ms) of feature rows `x`: the sum of costs, times the correction."""
        linear = x @ np.asarray(self.coef)
        return linear if self.correction is None else linear * correction_factor(self.correction, x, linear)

    def to_dict(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "features": list(self.features),
                "coef": self.coef, "correction": self.correction, "valid_for": self.valid_for, "fit": self.fit,
                "archs": self.archs}

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


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold index of each of n rows: a seeded shuffle, so a fit is reproducible."""
    return np.random.default_rng(seed).permutation(n) % folds


def fit_correction(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """Gradient-boosted trees on log(measured / out-of-fold sum of costs), as plain arrays (None below
    CORRECTION["min_archs"] rows). Out-of-fold: the trees learn the errors the sum makes on archs it was
    not fitted on, as it will on a search's candidates."""
    from sklearn.ensemble import GradientBoostingRegressor

    c = CORRECTION
    if len(y) < c["min_archs"]:
        return None
    fold = _folds(len(y), c["folds"], c["seed"])
    oof = np.empty(len(y))
    for k in range(c["folds"]):
        oof[fold == k] = x[fold == k] @ fit_coef(x[fold != k], y[fold != k])
    oof = np.maximum(oof, 1e-9)
    inputs = np.column_stack([x, oof])
    boost = GradientBoostingRegressor(n_estimators=c["trees"], max_depth=c["depth"], learning_rate=c["learning_rate"],
                                      subsample=c["subsample"], min_samples_leaf=c["min_leaf"], loss="huber",
                                      random_state=c["seed"])
    boost.fit(inputs, np.log(y / oof))
    trees = [{"left": t.tree_.children_left.tolist(), "right": t.tree_.children_right.tolist(),
              "feature": t.tree_.feature.tolist(), "threshold": t.tree_.threshold.tolist(),
              "value": t.tree_.value[:, 0, 0].tolist()} for t in boost.estimators_[:, 0]]
    out = {"learning_rate": c["learning_rate"], "clip": c["clip"], "init": 0.0, "trees": trees}
    # the boosting's starting value (huber: a quantile of the targets), read off its own prediction
    out["init"] = float(boost.predict(inputs[:1])[0] - _tree_sum(out, inputs[:1])[0])
    if not np.allclose(out["init"] + _tree_sum(out, inputs), boost.predict(inputs), rtol=0, atol=1e-9):
        raise CspnasError("the latency model's stored trees do not reproduce scikit-learn's prediction (has its "
                          "tree layout changed?); report this with your scikit-learn version")
    return out


def _tree_sum(correction: dict[str, Any], inputs: np.ndarray) -> np.ndarray:
    """learning_rate x the sum of the trees' outputs for each row of `inputs` (sklearn's traversal:
    go left when the value is <= the threshold; leaves have left == -1). Plain Python over the lists:
    a search predicts one candidate at a time, where numpy's per-call overhead would cost 100x more."""
    rows = inputs.astype(np.float32).astype(np.float64).tolist()  # sklearn's trees compare float32 values
    totals = []
    for row in rows:
        total = 0.0
        for t in correction["trees"]:
            left, right, feature, threshold = t["left"], t["right"], t["feature"], t["threshold"]
            node = 0
            while left[node] != -1:
                node = left[node] if row[feature[node]] <= threshold[node] else right[node]
            total += t["value"][node]
        totals.append(correction["learning_rate"] * total)
    return np.array(totals)


def correction_factor(correction: dict[str, Any], x: np.ndarray, linear: np.ndarray) -> np.ndarray:
    inputs = np.column_stack([x, np.maximum(linear, 1e-9)])
    clip = correction["clip"]
    return np.exp(np.clip(correction["init"] + _tree_sum(correction, inputs), np.log1p(-clip), np.log1p(clip)))


def fit_model(archs: Sequence[ArchConfig], latencies_ms: Sequence[float], valid_for: dict[str, Any],
              sources: dict[str, Any]) -> LatencyModel:
    """Fit on (arch, measured latency) pairs; `sources` (profile and run paths) is recorded, with the
    in-sample accuracy and a cross-validated one (each fold fitted whole, costs and correction, on
    the others; the model's `band` uses it)."""
    if len(archs) < len(FEATURES):
        raise CspnasError(f"{len(archs)} measured architectures are too few to fit {len(FEATURES)} costs; "
                          f"profile at least {len(FEATURES)} (--n 300 is the usual)")
    x = design_matrix(archs, valid_for["latency"]["input_size"])
    y = np.asarray(latencies_ms, dtype=float)

    def fitted(xs: np.ndarray, ys: np.ndarray) -> LatencyModel:
        return LatencyModel(coef=[float(c) for c in fit_coef(xs, ys)], valid_for=valid_for,
                            correction=fit_correction(xs, ys))

    model = fitted(x, y)
    fit = {**sources, "in_sample": accuracy(model.predict_features(x), y)}
    if len(y) >= 2 * CORRECTION["folds"]:
        fold, held = _folds(len(y), CORRECTION["folds"], CORRECTION["seed"] + 1), np.empty(len(y))
        for k in range(CORRECTION["folds"]):
            held[fold == k] = fitted(x[fold != k], y[fold != k]).predict_features(x[fold == k])
        fit["cross_validated"] = accuracy(held, y)
    model.fit, model.archs = fit, [a.arch_hash() for a in archs]
    return model


def _sound_tree(tree: dict[str, list], inputs: int) -> bool:
    """A tree the traversal can walk: equal-length arrays, every inner node's children after it (so a walk
    ends) and inside the tree, every split on an existing input."""
    left, right, feature, threshold, value = (tree[k] for k in ("left", "right", "feature", "threshold", "value"))
    n = len(left)
    if not (n >= 1 and len(right) == len(feature) == len(threshold) == len(value) == n):
        return False
    for i in range(n):
        if left[i] == -1:
            continue
        if not (isinstance(left[i], int) and isinstance(right[i], int) and isinstance(feature[i], int)
                and i < left[i] < n and i < right[i] < n and 0 <= feature[i] < inputs):
            return False
    return all(isinstance(v, (int, float)) for v in threshold + value)


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
    correction = data.get("correction")
    trees = correction.get("trees") if isinstance(correction, dict) else None
    if correction is not None and not (isinstance(trees, list) and all(
            isinstance(t, dict) and all(isinstance(t.get(k), list) for k in ("left", "right", "feature", "threshold",
                                                                             "value")) for t in trees)
            and all(isinstance(correction.get(k), (int, float)) for k in ("learning_rate", "clip", "init"))):
        raise CspnasError(f"{path}: latency model correction is malformed; fit it again")
    if correction is not None and not all(_sound_tree(t, len(FEATURES) + 1) for t in trees):
        raise CspnasError(f"{path}: latency model correction has a malformed tree; fit it again")
    return LatencyModel(coef=[float(c) for c in coef], valid_for=valid, fit=data.get("fit") or {},
                        archs=list(data.get("archs") or []), correction=correction)
