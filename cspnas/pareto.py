"""Pareto-front mathematics of the search: dominance, normalization, hypervolume, knee.

Pure numpy/pandas; knows nothing about torch, Ray or Optuna. Generic over any list of
:class:`Objective`; `cspnas.objectives` says which objectives a run has and binds their refs.

Normalization
    Every objective is mapped to a *minimization* coordinate that is 0 at ``ideal`` and
    1 at ``ref``::

        linear:  t = (v - ideal) / (ref - ideal)
        log:     t = (log v - log ideal) / (log ref - log ideal)

    The same formula serves both directions because ``ideal`` and ``ref`` already encode
    it (accuracy: ideal 1, ref 0 gives ``t = 1 - v``). Values worse than ``ref`` map
    above 1 (and then add nothing to the hypervolume); values better than ``ideal``
    are clipped to 0 (``ideal`` is the best conceivable value, so this only absorbs
    rounding). NaN stays NaN.

Reference point
    The hypervolume is measured in normalized space against the all-ones point, i.e.
    the vector of the objectives' ``ref`` values. The maximum possible value is 1.

Why fixed refs
    ``ideal``/``ref`` come from the configuration (the constraints), never from the
    observed data. A data-dependent normalization (min/max of the trials so far) would
    rescale every time a new extreme trial arrives, so the hypervolume after trial k
    would not be comparable with the one after trial k+1, nor across runs. With fixed
    refs the hypervolume curve of a run is monotone and two runs with the same refs
    can be compared number for number.

Knee rule
    The knee of a front is the point with the smallest Euclidean distance to the ideal
    point (the origin) in normalized space; ties go to the lowest index. In
    :func:`compute_front` the candidates are ordered best-first by the objectives, so a
    tie goes to the row that is best on the first objective.

Dominance
    ``a`` dominates ``b`` when ``a`` is no worse in every objective and strictly better
    in at least one. Of several rows with exactly equal objective values only the
    first (in DataFrame row order) is on the front, so a front never lists the same
    trade-off twice. A row with NaN in any objective is never on the front.

Measurement noise
    A measured objective (latency: its IQR; accuracy: its training noise) is not counted, so
    a small difference in it may be noise. Two values ``a`` and ``b`` are *tied* when
    ``|a - b| <= noise_tolerance``, the largest of: half the sum of their spreads (a
    ``spread`` column: the bands median ± IQR/2 overlap), ``noise_floor`` times the larger
    value (relative), ``noise_abs`` (absolute: accuracy's points), and, for a share of
    ``noise_count`` items (accuracy of n validation images), the binomial standard
    deviation of the difference ``sqrt((a(1-a) + b(1-b)) / n)``. A tie is no
    advantage: ``a`` then dominates ``b`` when ``a`` is no worse than ``b`` beyond the
    tolerance in every objective and strictly better in at least one (so a row that was
    better only by noise is dominated), unless ``b`` dominates ``a`` by the same rule too
    (possible with two noisy objectives: then neither removes the other). Only members of
    the exact front remove others this way (a row it dominates exactly acts through its
    dominator), so the noisy front is a function of the exact front alone: a subset of it,
    which the live tables (cspnas.run_format) can keep up to date from the exact front plus
    a new point. The hypervolume stays that of the exact front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

__all__ = [
    "Objective",
    "Front",
    "normalize",
    "pareto_mask",
    "hypervolume",
    "knee_index",
    "hypervolume_curve",
    "compute_front",
    "noise_tolerance",
]


@dataclass(frozen=True)
class Objective:
    """One search objective and its fixed normalization bounds (see module docstring)."""

    column: str  # DataFrame column
    direction: str  # "max" | "min"
    ref: float  # worst value of interest: normalizes to 1, hypervolume reference
    ideal: float  # best conceivable value: normalizes to 0
    log: bool = False  # normalize on a log scale; needs ideal > 0 (and ref > 0)
    spread: str | None = None  # column of each value's measurement spread (IQR): see "Measurement noise"
    noise_floor: float = 0.0  # relative: differences below this share of the larger value are ties
    noise_abs: float = 0.0  # absolute: differences up to this are ties
    noise_count: int = 0  # > 0: the value is a share of this many items; its binomial noise is a floor

    @property
    def noisy(self) -> bool:
        """Whether differences within some noise are ties (module docstring, "Measurement noise")."""
        return bool(self.spread or self.noise_floor or self.noise_abs or self.noise_count)

    def exact(self) -> "Objective":
        """The same objective with every difference counting (no noise rule)."""
        return replace(self, spread=None, noise_floor=0.0, noise_abs=0.0, noise_count=0)

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ValueError(
                f"objective {self.column!r}: direction must be 'max' or 'min', got {self.direction!r}"
            )
        if not (np.isfinite(self.ref) and np.isfinite(self.ideal)):
            raise ValueError(f"objective {self.column!r}: ref and ideal must be finite")
        # ideal must be strictly better than ref, otherwise the scale is empty or reversed.
        better = self.ideal > self.ref if self.direction == "max" else self.ideal < self.ref
        if not better:
            word = "above" if self.direction == "max" else "below"
            raise ValueError(
                f"objective {self.column!r}: ideal ({self.ideal}) must be strictly {word} ref ({self.ref})"
            )
        if self.log and min(self.ideal, self.ref) <= 0:
            raise ValueError(f"objective {self.column!r}: log scale needs ideal and ref > 0")


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames has no truth value
class Front:
    """The Pareto front of a result table."""

    table: pd.DataFrame  # front rows, best-first by the objectives, plus a bool 'knee' column
    hypervolume: float  # normalized hypervolume of the front (reference = all refs), in [0, 1]
    knee: int | None  # df index label of the knee row; None when the front is empty


# ---------------------------------------------------------------- normalization


def normalize(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Map raw values (shape ``(..., d)``) to minimization coordinates: ideal -> 0, ref -> 1."""
    v = np.asarray(values, dtype=float)
    _check_objectives(objectives)
    if v.shape[-1:] != (len(objectives),):
        raise ValueError(f"values have last dimension {v.shape[-1:]}, expected {len(objectives)} objectives")
    out = np.empty_like(v)
    for j, obj in enumerate(objectives):
        col = v[..., j]
        if obj.log:
            # log(v <= 0) is taken as -inf: "infinitely small", which is best for a min
            # objective (clipped to 0 below) and worst for a max one (maps to +inf).
            positive = col > 0
            logv = np.log(np.where(positive, col, 1.0))
            logv = np.where(positive | np.isnan(col), logv, -np.inf)
            logv = np.where(np.isnan(col), np.nan, logv)
            t = (logv - np.log(obj.ideal)) / (np.log(obj.ref) - np.log(obj.ideal))
        else:
            t = (col - obj.ideal) / (obj.ref - obj.ideal)
        out[..., j] = np.maximum(t, 0.0)  # better-than-ideal -> 0; NaN propagates
    return out


# ---------------------------------------------------------------- dominance


def pareto_mask(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Boolean mask (positional, aligned with ``df`` rows) of the non-dominated rows, ties
    within measurement noise included (module docstring).

    Exact duplicates: only the first row is kept. NaN in any objective: not on the front.
    """
    oriented = _oriented(df, objectives)
    mask = np.zeros(len(df), dtype=bool)
    valid = ~np.isnan(oriented).any(axis=1)
    idx = np.flatnonzero(valid)
    mask[idx[_nondominated(oriented[idx])]] = True
    if any(o.noisy for o in objectives):
        _drop_noise_wins(mask, oriented[valid], _spreads(df, objectives)[valid], idx, objectives)
    return mask


def noise_tolerance(a, b, spread_a, spread_b, floor=0.0, absolute=0.0, count=0):
    """The largest difference between values ``a`` and ``b`` that is still measurement noise (module
    docstring): half the sum of their spreads (IQRs; NaN counts as 0), at least ``floor`` x the larger
    one, ``absolute``, and, where ``count`` > 0, the binomial standard deviation of the difference of two
    shares of ``count`` items. Sign-blind (a maximized objective may come negated)."""
    a, b = np.abs(np.asarray(a, dtype=float)), np.abs(np.asarray(b, dtype=float))
    half = (np.nan_to_num(np.asarray(spread_a, dtype=float)) + np.nan_to_num(np.asarray(spread_b, dtype=float))) / 2
    count = np.asarray(count, dtype=float)
    pa, pb = np.clip(a, 0.0, 1.0), np.clip(b, 0.0, 1.0)
    binomial = np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / np.where(count > 0, count, np.inf))
    return np.maximum(np.maximum(half, floor * np.maximum(a, b)), np.maximum(absolute, binomial))


def _drop_noise_wins(mask: np.ndarray, points: np.ndarray, spreads: np.ndarray, idx: np.ndarray,
                     objectives: Sequence[Objective]) -> None:
    """Unset the front members that another exact-front member dominates once noise-sized differences
    are ties (module docstring: the noisy front is a subset of the exact one and a function of it)."""
    floors = np.array([o.noise_floor for o in objectives])
    absolute = np.array([o.noise_abs for o in objectives])
    counts = np.array([o.noise_count for o in objectives])
    pos = {row: k for k, row in enumerate(idx)}
    members = np.flatnonzero(mask)
    exact = np.array([pos[row] for row in members], dtype=int)
    points, spreads = points[exact], spreads[exact]
    for k, row in enumerate(members):
        p = points[k]
        tol = noise_tolerance(points, p, spreads, spreads[k], floors, absolute, counts)
        strictly = points < p
        others_win = np.all(points <= p + tol, axis=1) & strictly.any(axis=1)
        we_win = np.all(p <= points + tol, axis=1) & (p < points).any(axis=1)
        if (others_win & ~we_win).any():
            mask[row] = False


def _nondominated(points: np.ndarray) -> np.ndarray:
    """Mask of the minimization-non-dominated rows of a NaN-free array; first duplicate kept.

    After a lexicographic sort (ties by original position) no point can be dominated by
    or equal-and-earlier-than a point that comes after it, so each point only needs
    comparing with the front found so far: O(n * front size), vectorized per point.
    """
    n, d = points.shape
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    keys = (np.arange(n),) + tuple(points[:, j] for j in reversed(range(d)))
    front = np.empty_like(points)
    size = 0
    for i in np.lexsort(keys):
        p = points[i]
        # "<= in every coordinate" covers strict domination and exact duplicates.
        if size and np.all(front[:size] <= p, axis=1).any():
            continue
        front[size] = p
        size += 1
        mask[i] = True
    return mask


# ---------------------------------------------------------------- hypervolume


def hypervolume(points_normalized: np.ndarray, ref: float | np.ndarray = 1.0) -> float:
    """Exact hypervolume (minimization) dominated by ``points`` (n, d) w.r.t. ``ref``.

    Points not strictly better than ``ref`` in every coordinate (and rows with NaN)
    contribute nothing. d = 1, 2, 3 use direct sweeps (3-D: z-slices over an
    incrementally maintained 2-D staircase); d > 3 slices recursively (HSO).
    """
    pts = np.asarray(points_normalized, dtype=float)
    if pts.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, d), got shape {pts.shape}")
    r = np.broadcast_to(np.asarray(ref, dtype=float), (pts.shape[1],))
    pts = pts[np.all(pts < r, axis=1)]  # NaN compares False, so NaN rows drop too
    if len(pts) == 0 or pts.shape[1] == 0:
        return 0.0
    return float(_hv(pts[_nondominated(pts)], r))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points that are all strictly inside the reference box."""
    n, d = pts.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - pts[:, 0].min())
    if d == 2:
        return _hv2(pts, ref)
    if d == 3:
        return _hv3(pts, ref)
    # HSO: sweep the last coordinate; each slab is a (d-1)-D problem on the points below it.
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    tops = np.append(pts[1:, -1], ref[-1])
    vol = 0.0
    for i in range(n):
        height = tops[i] - pts[i, -1]
        if height > 0:
            below = pts[: i + 1, :-1]
            vol += height * _hv(below[_nondominated(below)], ref[:-1])
    return vol


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """2-D staircase area; the points need not be mutually non-dominated."""
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    widths = np.diff(np.append(pts[:, 0], ref[0]))
    lowest_y = np.minimum.accumulate(pts[:, 1])
    return float(np.sum(widths * (ref[1] - lowest_y)))


def _hv3(pts: np.ndarray, ref: np.ndarray) -> float:
    """3-D volume: sweep z upward, keeping the (x, y) staircase of the points seen so far.

    Staircase invariant: xs strictly increasing, ys strictly decreasing.
    """
    pts = pts[np.argsort(pts[:, 2], kind="stable")]
    tops = np.append(pts[1:, 2], ref[2])
    xs = np.empty(0)
    ys = np.empty(0)
    area = vol = 0.0
    for (x, y, z), top in zip(pts, tops):
        k = np.searchsorted(xs, x, side="right")  # xs[:k] <= x; their lowest y is ys[k-1]
        if not (k and ys[k - 1] <= y):
            lo = np.searchsorted(xs, x, side="left")
            # staircase points from lo on with ys >= y are now dominated: a prefix of ys[lo:]
            hi = lo + np.searchsorted(-ys[lo:], -y, side="right")
            xs = np.concatenate((xs[:lo], [x], xs[hi:]))
            ys = np.concatenate((ys[:lo], [y], ys[hi:]))
            area = float(np.sum(np.diff(np.append(xs, ref[0])) * (ref[1] - ys)))
        vol += area * (top - z)
    return vol


# ---------------------------------------------------------------- knee & curve


def knee_index(points_normalized: np.ndarray) -> int:
    """Position of the point nearest (Euclidean) to the origin; ties -> lowest index.

    Rows with NaN are never chosen; raises ValueError when no row is usable.
    """
    pts = np.asarray(points_normalized, dtype=float)
    if pts.ndim != 2 or len(pts) == 0:
        raise ValueError("knee_index needs a non-empty 2-D array of points")
    dist = np.sqrt(np.sum(pts**2, axis=1))
    dist = np.where(np.isnan(dist), np.inf, dist)
    if not np.isfinite(dist).any():
        raise ValueError("knee_index: no point with finite coordinates")
    return int(np.argmin(dist))  # argmin returns the first minimum


def hypervolume_curve(df: pd.DataFrame, objectives: Sequence[Objective], order_column: str) -> np.ndarray:
    """Normalized hypervolume of the first k rows (sorted by ``order_column``), k = 1..n.

    Incremental: a running front is kept and the hypervolume is recomputed only when a
    new row enters it (dominated rows, NaN rows and rows beyond a ref change nothing).
    """
    ordered = df.sort_values(order_column, kind="stable")
    pts = normalize(_values(ordered, objectives), objectives)
    curve = np.empty(len(pts))
    front = np.empty((0, len(objectives)))
    hv = 0.0
    for k, q in enumerate(pts):
        inside = bool(np.all(q < 1.0))  # False for NaN too
        if inside and not np.all(front <= q, axis=1).any():
            front = np.vstack((front[~np.all(q <= front, axis=1)], q))
            hv = float(_hv(front, np.ones(len(q))))
        curve[k] = hv
    return curve


def compute_front(df: pd.DataFrame, objectives: Sequence[Objective]) -> Front:
    """Front rows sorted best-first (by objective 1, then 2, ...), its hypervolume and knee
    (the hypervolume is the exact front's, which noise ties do not change)."""
    mask = pareto_mask(df, objectives)
    table = df.iloc[np.flatnonzero(mask)]
    oriented = _oriented(table, objectives)
    # lexsort: last key is primary, so reverse to make the first objective primary.
    order = np.lexsort(tuple(oriented[:, j] for j in reversed(range(len(objectives)))))
    table = table.iloc[order].copy()
    table["knee"] = False  # overwrites any existing 'knee' column
    if len(table) == 0:
        return Front(table=table, hypervolume=0.0, knee=None)
    pts = normalize(_values(table, objectives), objectives)
    pos = knee_index(pts)
    table.iloc[pos, table.columns.get_loc("knee")] = True
    label = table.index[pos]
    label = label.item() if isinstance(label, np.generic) else label  # plain int, not np.int64
    noisy = any(o.noisy for o in objectives)
    hv = hypervolume(normalize(_values(df, objectives), objectives) if noisy else pts)
    return Front(table=table, hypervolume=hv, knee=label)


# ---------------------------------------------------------------- helpers


def _check_objectives(objectives: Sequence[Objective]) -> None:
    if len(objectives) == 0:
        raise ValueError("at least one objective is required")


def _values(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Objective columns as a float (n, d) array, with a clear error for missing columns."""
    _check_objectives(objectives)
    cols = [o.column for o in objectives]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"result table lacks objective column(s) {missing}; has {list(df.columns)}")
    return df[cols].to_numpy(dtype=float, na_value=np.nan)


def _spreads(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Each objective's spread column as an (n, d) array; 0 where an objective has none (or the table lacks it)."""
    cols = [df[o.spread].to_numpy(dtype=float, na_value=np.nan) if o.spread and o.spread in df.columns
            else np.zeros(len(df)) for o in objectives]
    return np.nan_to_num(np.stack(cols, axis=1) if cols else np.zeros((len(df), 0)))


def _oriented(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Raw values turned into minimization (max objectives negated); no rescaling needed."""
    signs = np.array([-1.0 if o.direction == "max" else 1.0 for o in objectives])
    return _values(df, objectives) * signs
