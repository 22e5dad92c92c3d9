"""Tests for cspnas.pareto against independent brute-force computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cspnas.objectives import OBJECTIVES, bind
from cspnas.pareto import (
    Front,
    Objective,
    compute_front,
    hypervolume,
    hypervolume_curve,
    knee_index,
    normalize,
    pareto_mask,
)

SETTINGS = settings(max_examples=150, deadline=None)

# Coarse binary fractions: plenty of ties, exact float arithmetic, some beyond ref (> 1).
COORD = st.sampled_from([i / 8 for i in range(11)])


def points(dim: int, max_size: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.tuples(*[COORD] * dim), min_size=0, max_size=max_size).map(
        lambda rows: np.array(rows, dtype=float).reshape(len(rows), dim)
    )


# ---------------------------------------------------------------- brute-force references


def brute_pareto_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Textbook double loop: dominated, duplicate of an earlier row, or NaN -> off the front."""
    sign = [1.0 if d == "min" else -1.0 for d in directions]
    rows = [[s * v for s, v in zip(sign, row)] for row in values.tolist()]
    n = len(rows)
    mask = []
    for i in range(n):
        a = rows[i]
        on = not any(math.isnan(x) for x in a)
        for j in range(n):
            b = rows[j]
            if not on or j == i or any(math.isnan(x) for x in b):
                continue
            no_worse = all(bj <= aj for aj, bj in zip(a, b))
            strictly = any(bj < aj for aj, bj in zip(a, b))
            if no_worse and (strictly or j < i):
                on = False
        mask.append(on)
    return np.array(mask, dtype=bool)


def hv_inclusion_exclusion(pts: np.ndarray, ref: np.ndarray) -> float:
    """Union of boxes [p, ref] by inclusion-exclusion over all non-empty subsets."""
    total = 0.0
    for size in range(1, len(pts) + 1):
        for subset in itertools.combinations(range(len(pts)), size):
            corner = pts[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(ref - corner, 0.0, None)))
    return total


def hv_grid(pts: np.ndarray, ref: np.ndarray) -> float:
    """Exact cell decomposition: cut space at every point coordinate, sum dominated cells."""
    inside = pts[np.all(pts < ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    cuts = [np.unique(np.append(inside[:, j], ref[j])) for j in range(pts.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(c) - 1) for c in cuts]):
        low = np.array([cuts[j][k] for j, k in enumerate(cell)])
        if np.all(inside <= low, axis=1).any():
            total += float(np.prod([cuts[j][k + 1] - cuts[j][k] for j, k in enumerate(cell)]))
    return total


# ---------------------------------------------------------------- Objective & normalize


OBJS = bind(("accuracy", "macs", "latency"), {"macs": 1e9, "latency": 40.0})
MACS_IDEAL = OBJECTIVES["macs"].ideal


def test_default_objectives_are_documented_choices():
    acc, macs, lat = OBJS
    assert (acc.direction, acc.ideal, acc.ref, acc.log) == ("max", 1.0, 0.0, False)
    assert (macs.direction, macs.ideal, macs.ref, macs.log) == ("min", MACS_IDEAL, 1e9, True)
    assert (lat.direction, lat.ideal, lat.ref, lat.log) == ("min", 0.0, 40.0, False)


def test_normalize_maps_ideal_to_zero_and_ref_to_one():
    ideal = np.array([[1.0, MACS_IDEAL, 0.0]])
    ref = np.array([[0.0, 1e9, 40.0]])
    np.testing.assert_allclose(normalize(ideal, OBJS), [[0.0, 0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(normalize(ref, OBJS), [[1.0, 1.0, 1.0]])


def test_normalize_linear_log_and_beyond_ref():
    geometric_mid = math.sqrt(MACS_IDEAL * 1e9)
    got = normalize(np.array([[0.75, geometric_mid, 20.0], [0.0, 1e10, 80.0]]), OBJS)
    np.testing.assert_allclose(got[0], [0.25, 0.5, 0.5])
    # Beyond ref maps above 1: 1e10 is one decade past 1e9 over a 6-decade scale.
    np.testing.assert_allclose(got[1], [1.0, 7 / 6, 2.0])
    # Log scale: every decade is the same step.
    decades = normalize(np.array([[1.0, 1e4, 0.0], [1.0, 1e5, 0.0], [1.0, 1e6, 0.0]]), OBJS)[:, 1]
    np.testing.assert_allclose(np.diff(decades), [1 / 6, 1 / 6])


def test_normalize_clips_better_than_ideal_and_keeps_nan():
    got = normalize(np.array([[1.0, 10.0, -1.0], [np.nan, 0.0, 5.0]]), OBJS)
    assert got[0].tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(got[1, 0]) and got[1, 1] == 0.0 and got[1, 2] == pytest.approx(0.125)


def test_normalize_log_max_objective():
    throughput = [Objective("fps", "max", ref=1.0, ideal=1000.0, log=True)]
    got = normalize(np.array([[1000.0], [10.0], [1.0], [0.0], [-3.0]]), throughput)[:, 0]
    np.testing.assert_allclose(got[:3], [0.0, 2 / 3, 1.0])  # 10 fps: two of three decades down
    assert got[3] == np.inf and got[4] == np.inf  # non-positive is infinitely bad


def test_normalization_does_not_depend_on_other_rows():
    one = normalize(np.array([[0.9, 1e8, 10.0]]), OBJS)
    many = normalize(np.array([[0.9, 1e8, 10.0], [0.1, 5e9, 300.0]]), OBJS)
    np.testing.assert_array_equal(one[0], many[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(column="a", direction="maximize", ref=0.0, ideal=1.0),
        dict(column="a", direction="max", ref=1.0, ideal=0.0),
        dict(column="a", direction="min", ref=1.0, ideal=1.0),
        dict(column="a", direction="min", ref=1e9, ideal=0.0, log=True),
        dict(column="a", direction="min", ref=float("inf"), ideal=0.0),
    ],
)
def test_objective_rejects_inconsistent_bounds(kwargs):
    with pytest.raises(ValueError):
        Objective(**kwargs)


def test_normalize_checks_dimension():
    with pytest.raises(ValueError):
        normalize(np.zeros((2, 2)), OBJS)


# ---------------------------------------------------------------- pareto_mask

MIXED = [
    Objective("a", "max", ref=0.0, ideal=1.0),
    Objective("b", "min", ref=1.0, ideal=0.0),
    Objective("c", "min", ref=1.0, ideal=0.0),
]


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(*[st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, np.nan])] * 3), max_size=30
    ),
    ndim=st.integers(1, 3),
)
def test_pareto_mask_matches_brute_force(rows, ndim):
    df = pd.DataFrame(rows, columns=["a", "b", "c"], dtype=float)
    objs = MIXED[:ndim]
    expected = brute_pareto_mask(df[["a", "b", "c"][:ndim]].to_numpy(), [o.direction for o in objs])
    np.testing.assert_array_equal(pareto_mask(df, objs), expected)


def test_pareto_mask_duplicates_nan_and_index_independence():
    df = pd.DataFrame(
        {
            "a": [0.9, 0.9, 0.5, np.nan, 0.95, 0.9],
            "b": [0.5, 0.5, 0.1, 0.0, 0.9, 0.6],
            "c": [0.2, 0.2, 0.2, 0.0, 0.2, 0.2],
        },
        index=[10, 3, 7, 1, 2, 5],  # labels shuffled on purpose: the mask is positional
    )
    # row 1 duplicates row 0 (first kept); row 3 has NaN; row 5 is dominated by row 0.
    assert pareto_mask(df, MIXED).tolist() == [True, False, True, False, True, False]


def test_pareto_mask_large_front_is_fast_enough():
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(10_000))
    df = pd.DataFrame({"a": x, "b": x**2, "c": 0.5})  # every row trades a for b: all on front
    assert pareto_mask(df, MIXED).all()


def test_pareto_mask_missing_column():
    with pytest.raises(KeyError, match="latency_ms"):
        pareto_mask(pd.DataFrame({"accuracy": [0.5], "macs": [1e6]}), OBJS)


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_hand_cases():
    assert hypervolume(np.empty((0, 3))) == 0.0
    assert hypervolume(np.array([[0.3], [0.6]])) == pytest.approx(0.7)
    # 2-D: 0.8*0.4 + 0.5*0.7 - overlap 0.5*0.4
    assert hypervolume(np.array([[0.2, 0.6], [0.5, 0.3]])) == pytest.approx(0.47)
    assert hypervolume(np.array([[0.5, 0.5, 0.5]])) == pytest.approx(0.125)
    # 3-D: 0.5 + 0.25 - overlap 0.125
    assert hypervolume(np.array([[0.0, 0.0, 0.5], [0.5, 0.5, 0.0]])) == pytest.approx(0.625)
    # three axis-aligned slabs: 1 - 0.5^3
    slabs = np.array([[0.0, 0.0, 0.5], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]])
    assert hypervolume(slabs) == pytest.approx(0.875)
    assert hypervolume(np.zeros((1, 4))) == pytest.approx(1.0)


def test_hypervolume_vector_reference():
    pts = np.array([[1.0, 2.0, 3.0]])
    assert hypervolume(pts, ref=np.array([2.0, 4.0, 6.0])) == pytest.approx(1 * 2 * 3)
    assert hypervolume(pts, ref=3.0) == pytest.approx(2 * 1 * 0)


def test_hypervolume_points_beyond_ref_contribute_nothing():
    base = np.array([[0.25, 0.5, 0.5]])
    beyond = np.array([[1.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, np.nan], [2.0, 2.0, 2.0]])
    assert hypervolume(beyond) == 0.0
    assert hypervolume(np.vstack([base, beyond])) == pytest.approx(hypervolume(base))


@SETTINGS
@given(pts=points(3, 8))
def test_hypervolume_3d_matches_inclusion_exclusion(pts):
    assert hypervolume(pts) == pytest.approx(hv_inclusion_exclusion(pts, np.ones(3)), abs=1e-12)


@SETTINGS
@given(pts=points(3, 25))
def test_hypervolume_3d_matches_grid(pts):
    assert hypervolume(pts) == pytest.approx(hv_grid(pts, np.ones(3)), abs=1e-12)


@SETTINGS
@given(pts=points(2, 30))
def test_hypervolume_2d_matches_grid(pts):
    assert hypervolume(pts) == pytest.approx(hv_grid(pts, np.ones(2)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(pts=points(4, 7), dim=st.sampled_from([1, 4]))
def test_hypervolume_other_dims_match_inclusion_exclusion(pts, dim):
    pts = pts[:, :dim]
    assert hypervolume(pts) == pytest.approx(hv_inclusion_exclusion(pts, np.ones(dim)), abs=1e-12)


def test_hypervolume_3d_continuous_random_matches_grid():
    rng = np.random.default_rng(1)
    for _ in range(5):
        pts = rng.random((20, 3)) * 1.1  # some beyond ref; no ties, unlike the lattice cases
        assert hypervolume(pts) == pytest.approx(hv_grid(pts, np.ones(3)), rel=1e-12)


@SETTINGS
@given(pts=points(3, 15), extra=st.lists(st.tuples(st.integers(0, 14), *[COORD] * 3), max_size=10))
def test_hypervolume_ignores_dominated_points(pts, extra):
    if len(pts) == 0:
        return
    # each extra point = an existing point pushed worse (>=) in every coordinate
    worse = [pts[i % len(pts)] + np.array(delta) for i, *delta in extra]
    padded = np.vstack([pts, *worse]) if worse else pts
    assert hypervolume(padded) == pytest.approx(hypervolume(pts), abs=1e-12)


@SETTINGS
@given(pts=points(3, 15), more=points(3, 5))
def test_hypervolume_monotone_when_adding_points(pts, more):
    assert hypervolume(np.vstack([pts, more])) >= hypervolume(pts) - 1e-12


def test_hypervolume_rejects_1d_input():
    with pytest.raises(ValueError):
        hypervolume(np.array([0.1, 0.2]))


# ---------------------------------------------------------------- knee


def test_knee_on_simple_front():
    front = np.array([[0.0, 1.0], [0.3, 0.3], [1.0, 0.0]])
    assert knee_index(front) == 1
    assert knee_index(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.45, 0.6]])) == 1


def test_knee_ties_go_to_lowest_index_and_nan_is_skipped():
    assert knee_index(np.array([[0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])) == 0
    assert knee_index(np.array([[np.nan, 0.0], [0.5, 0.5]])) == 1
    with pytest.raises(ValueError):
        knee_index(np.empty((0, 2)))


# ---------------------------------------------------------------- hypervolume_curve


def random_trials(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "trial": rng.permutation(n),  # completion order differs from row order
            "accuracy": rng.uniform(0.3, 0.95, n),
            "macs": 10 ** rng.uniform(6, 9.5, n),  # some beyond the 1e9 ref
            "latency_ms": rng.uniform(1, 60, n),  # some beyond the 40 ms ref
        }
    )
    df.loc[rng.choice(n, 3, replace=False), "accuracy"] = np.nan  # failed trials
    return df


def test_hypervolume_curve_is_monotone_and_matches_prefixes():
    df = random_trials(60, seed=2)
    curve = hypervolume_curve(df, OBJS, "trial")
    assert curve.shape == (60,)
    assert np.all(np.diff(curve) >= -1e-15)
    ordered = df.sort_values("trial")
    pts = normalize(ordered[["accuracy", "macs", "latency_ms"]].to_numpy(), OBJS)
    for k in (1, 7, 30, 60):
        assert curve[k - 1] == pytest.approx(hypervolume(pts[:k]), abs=1e-12)
    assert curve[-1] == pytest.approx(compute_front(df, OBJS).hypervolume, abs=1e-12)
    assert 0.0 < curve[-1] < 1.0


def test_hypervolume_curve_follows_order_column_not_row_order():
    df = random_trials(40, seed=3)
    shuffled = df.sample(frac=1.0, random_state=0)
    np.testing.assert_allclose(
        hypervolume_curve(shuffled, OBJS, "trial"), hypervolume_curve(df, OBJS, "trial")
    )


def test_hypervolume_curve_empty():
    empty = pd.DataFrame({"trial": [], "accuracy": [], "macs": [], "latency_ms": []})
    assert hypervolume_curve(empty, OBJS, "trial").shape == (0,)


# ---------------------------------------------------------------- compute_front


def test_compute_front_table_knee_and_hypervolume():
    df = pd.DataFrame(
        {
            "accuracy": [0.90, 0.70, 0.80, 0.60, 0.80, np.nan],
            "macs": [8e8, 1e6, 1e7, 1e8, 1e7, 1e5],
            "latency_ms": [30.0, 2.0, 5.0, 20.0, 5.0, 1.0],
            "name": list("abcdef"),
        },
        index=[100, 101, 102, 103, 104, 105],
    )
    front = compute_front(df, OBJS)
    assert isinstance(front, Front)
    # d is dominated by c; e duplicates c; f failed (NaN). Sorted by accuracy, best first.
    assert front.table["name"].tolist() == ["a", "c", "b"]
    assert front.table["knee"].sum() == 1
    pts = normalize(front.table[["accuracy", "macs", "latency_ms"]].to_numpy(), OBJS)
    dist = np.linalg.norm(pts, axis=1)
    assert front.knee == front.table.index[int(np.argmin(dist))]
    assert front.table.loc[front.knee, "knee"]
    assert front.hypervolume == pytest.approx(hv_grid(pts, np.ones(3)), abs=1e-12)
    assert "knee" not in df.columns  # input untouched


def test_compute_front_of_empty_or_all_failed_table():
    df = pd.DataFrame({"accuracy": [np.nan], "macs": [1e6], "latency_ms": [1.0]})
    front = compute_front(df, OBJS)
    assert front.table.empty and front.knee is None and front.hypervolume == 0.0
    assert "knee" in front.table.columns
