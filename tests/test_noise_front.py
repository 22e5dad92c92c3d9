"""The front respects measurement noise: a latency win inside the IQRs is a tie (cspnas.pareto,
"Measurement noise"); confirmed re-measurements replace first ones; margins inside the noise are marginal."""
import numpy as np
import pandas as pd
import pytest

from cspnas.objectives import OBJECTIVES, bind, marginal, settled
from cspnas.pareto import Objective, compute_front, noise_tolerance, pareto_mask

ACC = Objective("accuracy", "max", ref=0.0, ideal=1.0)
LAT = Objective("latency_ms", "min", ref=10.0, ideal=0.0, spread="latency_iqr_ms", noise_floor=0.02)
EXACT_LAT = Objective("latency_ms", "min", ref=10.0, ideal=0.0)


def table(rows):
    return pd.DataFrame(rows, columns=["accuracy", "latency_ms", "latency_iqr_ms"])


def test_tolerance_is_half_the_summed_iqrs_or_the_relative_floor():
    assert noise_tolerance(1.0, 1.1, 0.2, 0.4) == pytest.approx(0.3)
    assert noise_tolerance(10.0, 10.1, 0.0, 0.0, 0.02) == pytest.approx(0.202)  # floor x the larger value
    assert noise_tolerance(1.0, 1.0, np.nan, 0.1) == pytest.approx(0.05)  # no recorded IQR counts as 0


def test_a_member_better_only_by_noise_leaves_the_front():
    # issue 12's case: trial 1 is on the exact front by 0.4 us of latency on a 20 us IQR
    df = table([(0.90, 1.0000, 0.02), (0.85, 0.9996, 0.02)])
    assert list(pareto_mask(df, [ACC, EXACT_LAT])) == [True, True]
    assert list(pareto_mask(df, [ACC, LAT])) == [True, False]


def test_a_latency_win_beyond_the_noise_keeps_its_place():
    df = table([(0.90, 1.0, 0.02), (0.85, 0.9, 0.02)])  # 100 us faster, IQRs 20 us, floor 20 us
    assert list(pareto_mask(df, [ACC, LAT])) == [True, True]


def test_the_iqr_decides_when_it_is_wider_than_the_floor():
    rows = [(0.90, 1.0, 0.02), (0.85, 0.9, 0.02)]
    noisy = table([rows[0], (0.85, 0.9, 0.30)])  # same values, the faster one's IQR 300 us: within noise
    assert list(pareto_mask(table(rows), [ACC, LAT])) == [True, True]
    assert list(pareto_mask(noisy, [ACC, LAT])) == [True, False]


def test_near_twins_keep_the_raw_better_one_only():
    df = table([(0.90, 1.001, 0.02), (0.90, 1.000, 0.02)])
    assert list(pareto_mask(df, [ACC, LAT])) == [False, True]


def test_mutual_noise_dominance_removes_neither():
    # two noisy objectives, each row better in one by noise only: a tie, both stay
    acc = Objective("accuracy", "max", ref=0.0, ideal=1.0, spread="acc_iqr")
    df = pd.DataFrame({"accuracy": [0.900, 0.901], "acc_iqr": [0.01, 0.01],
                       "latency_ms": [1.000, 1.001], "latency_iqr_ms": [0.02, 0.02]})
    assert list(pareto_mask(df, [acc, LAT])) == [True, True]


def test_noise_front_is_a_subset_and_the_hypervolume_is_the_exact_fronts():
    rng = np.random.default_rng(0)
    df = table(np.column_stack([rng.uniform(0.5, 1, 300), rng.uniform(0.5, 5, 300), rng.uniform(0, 0.3, 300)]))
    df["macs"] = rng.uniform(1e6, 1e8, 300)
    macs = Objective("macs", "min", ref=1e9, ideal=1e3, log=True)
    exact, noisy = compute_front(df, [ACC, macs, EXACT_LAT]), compute_front(df, [ACC, macs, LAT])
    assert set(noisy.table.index) < set(exact.table.index)
    assert noisy.hypervolume == pytest.approx(exact.hypervolume)
    assert noisy.table["knee"].sum() == 1


def test_the_run_objectives_carry_latencys_noise_rule():
    bound = {o.column: o for o in bind(["accuracy", "macs", "latency"], {"macs": 1e8, "latency": 10.0})}
    assert bound["latency_ms"].spread == "latency_iqr_ms" and bound["latency_ms"].noise_floor > 0
    assert bound["macs"].spread is None and bound["macs"].noise_floor == 0  # counted, not measured: exact


def test_confirmed_numbers_replace_the_first_ones():
    df = pd.DataFrame({"accuracy": [0.9, 0.8], "latency_ms": [1.0, 2.0], "latency_iqr_ms": [0.1, 0.1],
                       "latency_confirmed_ms": [1.5, np.nan], "latency_confirmed_iqr_ms": [0.01, np.nan]})
    out = settled(df)
    assert list(out["latency_ms"]) == [1.5, 2.0] and list(out["latency_iqr_ms"]) == [0.01, 0.1]
    assert list(out["confirmed"]) == [True, False]
    assert list(df["latency_ms"]) == [1.0, 2.0]  # a copy


def test_marginal_means_a_margin_to_the_limit_inside_the_noise():
    df = pd.DataFrame({"latency_ms": [9.0, 9.95, 9.7, 9.7, 10.3], "latency_iqr_ms": [0.1, 0.0, 0.1, 0.8, 0.1]})
    # floor 2% of 10 ms = 0.2 ms; half the IQR 0.05 / 0.4 ms
    assert list(marginal(df, {"latency": 10.0})) == [False, True, False, True, True]
    assert not marginal(df, {"latency": None}).any()
    assert OBJECTIVES["macs"].noise_floor == 0  # no noise, never marginal


def test_a_marginal_member_is_marked_in_report_dashboard_and_model_card(tmp_path):
    import yaml
    from rich.console import Console

    from cspnas import run_format
    from cspnas.results.dashboard import write_dashboard
    from cspnas.results.export import export_trial
    from cspnas.results.report import print_report
    from run_fixture import make_run

    run_dir = make_run(tmp_path, 8, max_macs=1e12)
    run = run_format.load_run(run_dir)
    knee = run.front[run.front["knee"]].iloc[0]
    config = dict(run.config)
    config["settings"]["constraints"]["max_latency_ms"] = float(knee["latency_ms"]) * 1.001  # 0.1% to spare
    run_format.write_yaml_atomic(run_dir / run_format.CONFIG, config)
    front, _ = run_format.pareto_frame(run.trials, config)
    run_format.write_csv_atomic(front, run_dir / run_format.PARETO)
    run = run_format.load_run(run_dir)
    assert run.front.set_index("trial").loc[knee["trial"], "marginal"]

    console = Console(record=True, width=250)
    print_report(run, console=console)
    assert "marginal = within measurement noise of a limit" in console.export_text()
    html = write_dashboard(run_dir, importance=False).read_text()
    assert "&#9670; knee marginal" in html
    export_trial(run, tmp_path / "out", formats=("json",))
    assert "**Marginal**" in (tmp_path / "out" / "MODEL.md").read_text()


# -- accuracy: an absolute tolerance in points, at least the binomial noise of the validation size ------------

NOISY_ACC = Objective("accuracy", "max", ref=0.0, ideal=1.0, noise_abs=0.02)


def test_absolute_and_binomial_tolerances():
    assert noise_tolerance(0.80, 0.81, 0, 0, absolute=0.02) == pytest.approx(0.02)
    # shares of 100 images: sqrt((0.5 * 0.5 + 0.5 * 0.5) / 100) = 0.0707 beats the absolute 0.02
    assert noise_tolerance(0.5, 0.5, 0, 0, absolute=0.02, count=100) == pytest.approx(0.0707, abs=1e-4)
    assert noise_tolerance(-0.5, -0.5, 0, 0, count=100) == pytest.approx(0.0707, abs=1e-4)  # negated (oriented)
    assert noise_tolerance(0.99, 0.99, 0, 0, absolute=0.02, count=10_000) == pytest.approx(0.02)
    assert noise_tolerance(0.5, 0.5, 0, 0) == 0  # no rule: exact


def test_an_accuracy_win_inside_the_points_is_a_tie():
    df = pd.DataFrame({"accuracy": [0.800, 0.815, 0.850], "macs": [1e6, 2e6, 3e6]})
    macs = Objective("macs", "min", ref=1e9, ideal=1e3, log=True)
    assert list(pareto_mask(df, [ACC, macs])) == [True, True, True]
    # 1.5 points more for 2x the MACs is noise: the smaller net wins; 5 points is not
    assert list(pareto_mask(df, [NOISY_ACC, macs])) == [True, False, True]
    binomial = Objective("accuracy", "max", ref=0.0, ideal=1.0, noise_abs=0.001, noise_count=200)
    assert list(pareto_mask(df, [binomial, macs])) == [True, False, False]  # 200 images: 5 points is noise too


def test_a_dominated_row_removes_nobody():
    # row 1 is exactly dominated by row 0 and would beat row 2 by noise alone (its IQR is wide), row 0 would
    # not: only exact-front members remove others, so the noisy front depends on the exact front alone
    df = table([(0.90, 1.0, 0.0), (0.86, 1.0, 0.6), (0.85, 0.8, 0.0)])
    assert list(pareto_mask(df, [ACC, LAT])) == [True, False, True]
    df.loc[0, "latency_iqr_ms"] = 0.6  # now the front member itself is that noisy: it removes row 2
    assert list(pareto_mask(df, [ACC, LAT])) == [True, False, False]


def test_the_run_records_its_accuracy_noise_and_old_runs_stay_exact():
    from cspnas.objectives import ACCURACY_NOISE_POINTS
    from cspnas.run_format import objectives_of

    config = {"settings": {"objectives": ["accuracy", "macs"], "accuracy_noise": 1.5}, "data": {"val": 180},
              "references": {"macs": 1e8}}
    acc = objectives_of(config)[0]
    assert (acc.noise_abs, acc.noise_count) == (pytest.approx(0.015), 180)
    assert objectives_of({**config, "settings": {**config["settings"], "accuracy_noise": 0}})[0].noisy is False
    old = {**config, "settings": {"objectives": ["accuracy", "macs"]}}  # made before the setting
    assert objectives_of(old)[0].noisy is False
    assert ACCURACY_NOISE_POINTS > 0


def test_the_report_says_within_how_many_points_accuracies_tie(tmp_path):
    import dataclasses

    from rich.console import Console

    from cspnas import run_format
    from cspnas.results.report import print_report
    from run_fixture import make_run

    noisy = run_format.load_run(make_run(tmp_path, 12, accuracy_noise=3.0))
    assert noisy.config["settings"]["accuracy_noise"] == 3.0
    exact = dataclasses.replace(noisy, config={**noisy.config, "settings": {**noisy.config["settings"],
                                                                            "accuracy_noise": 0.0}})
    exact_front, _ = run_format.pareto_frame(noisy.trials, exact.config)
    assert set(noisy.front["trial"]) <= set(exact_front["trial"])  # ties only ever remove members
    console = Console(record=True, width=250)
    print_report(noisy, console=console)
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "accuracies within 3 points (or the validation size's binomial noise) tie" in text
    console = Console(record=True, width=250)
    print_report(exact, console=console)
    assert "accuracies within" not in console.export_text()
