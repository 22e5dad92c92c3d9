"""Latency models (issue 13): the designed profile, features from the config alone, the fit, the model
file and its refusals, and the cost meter predicting (and confirming) instead of measuring."""
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cspnas.cli import main
from cspnas.cost import LatencySettings
from cspnas.errors import CspnasError
from cspnas.latency_model.features import FEATURES, SCALE, arch_features
from cspnas.latency_model.fitting import fit_from
from cspnas.latency_model.model import accuracy, design_matrix, fit_coef, load_model
from cspnas.latency_model.profile import design, profile_device, read_profile, space_id
from cspnas.models import build_model
from cspnas.search.costs import CostMeter
from cspnas.search.preflight import _conv_linear_macs
from cspnas.space.searchspace import load_space

SPACE = load_space("default")
FAST = LatencySettings(input_size=8, min_run_time_s=0.005, warmup=1)  # tiny and quick: these tests check plumbing


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A complete 32-architecture profile of the default space at 8x8 (real timings) and a model fitted on it."""
    folder = tmp_path_factory.mktemp("latency")
    profile = profile_device(SPACE, FAST, 32, folder / "device.json", repeats=1)
    model, _ = fit_from(folder / "device.json")
    model.save(folder / "model.json")
    return folder, profile


def test_design_covers_every_knob_value_and_a_longer_design_extends_a_shorter_one():
    archs = design(SPACE, 80)
    for knob in ("stage_type", "block_type", "split_ratio", "out_chs", "depth"):
        for i, spec in enumerate(SPACE.stages):
            values = set(spec[knob]) if knob == "out_chs" else set(range(spec[knob].min, spec[knob].max + 1)) \
                if knob == "depth" else {0.25, 0.5, 0.75} if knob == "split_ratio" else None
            seen = Counter(getattr(a.stages[i], knob) for a in archs
                           if knob != "split_ratio" or a.stages[i].stage_type != "plain")
            if values is not None:
                assert set(seen) == values, (knob, i, seen)
            else:
                assert len(seen) == (4 if knob == "stage_type" else 5), (knob, i, seen)
    assert [a.arch_hash() for a in design(SPACE, 50)] == [a.arch_hash() for a in archs[:50]]
    corners = {a.arch_hash() for a in SPACE.corners(3, 10) + SPACE.corners(3, 10, cheapest=False)}
    assert corners <= {a.arch_hash() for a in archs}
    assert not corners & {a.arch_hash() for a in design(SPACE, 30, seed=1, corners=False)}


def test_features_come_from_the_config_and_match_the_built_network():
    plain = [a for a in design(SPACE, 120) if not any(s.se_ratio for s in a.stages)]  # SE convs act on 1x1 maps
    assert len(plain) >= 8
    for arch in plain[::len(plain) // 8]:
        f = dict(zip(FEATURES, arch_features(arch, 32)))
        conv_macs = sum(v for k, v in f.items() if k.startswith("macs_")) / SCALE
        linear = arch.stages[-1].out_chs * arch.num_classes
        assert conv_macs == pytest.approx(_conv_linear_macs(build_model(arch), 3, 32) - linear, rel=1e-9)
        model = build_model(arch).eval()
        convs = [m for m in model.modules() if type(m).__name__ == "Conv2d"]
        assert f["calls"] == len(convs)
        by_band = [0, 0, 0, 0]  # each built convolution's MACs, by output-channel band (<= 32, 64, 128, more)

        def count(m, inputs, out):
            k = m.kernel_size[0] * m.kernel_size[1]
            by_band[sum(m.out_channels > e for e in (32, 64, 128))] += (
                out.shape[1] * out.shape[2] * out.shape[3] * m.in_channels // m.groups * k)

        hooks = [m.register_forward_hook(count) for m in convs]
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert by_band == [pytest.approx(sum(f[f"macs_{kind}_c{band}"] for kind in ("1x1", "kxk", "grouped")) / SCALE,
                                         rel=1e-9) for band in range(4)]


def test_the_fit_recovers_known_per_op_costs():
    archs = design(SPACE, 60)
    x = design_matrix(archs, 32)
    true = np.linspace(0.5, 2.0, len(FEATURES)) * (np.arange(len(FEATURES)) % 3 != 1)  # some costs are zero
    coef = fit_coef(x, x @ true)
    assert accuracy(x @ coef, x @ true)["within_10pct"] == 1.0
    assert np.all(coef >= 0)


def test_the_correction_learns_what_a_sum_of_costs_misses_and_survives_json(tmp_path):
    from cspnas.latency_model.model import CORRECTION, LatencyModel, fit_model, load_model

    archs = design(SPACE, 240)
    x = design_matrix(archs, 32)
    base = x @ (np.linspace(0.5, 2.0, len(FEATURES)) * (np.arange(len(FEATURES)) % 3 != 1))
    # an interaction no per-op cost can express: networks with many calls run 12% slower per call
    slow = x[:, FEATURES.index("calls")] > np.median(x[:, FEATURES.index("calls")])
    y = base * np.where(slow, 1.12, 0.94)
    valid = {"space": space_id(SPACE), "latency": {"input_size": 32}, "fingerprint": {}}
    sum_only = LatencyModel(coef=list(fit_coef(x, y)), valid_for=valid)
    model = fit_model(archs, y, valid, {})
    assert model.correction is not None and len(model.correction["trees"]) == CORRECTION["trees"]
    plain = accuracy(sum_only.predict_features(x), y)["within_10pct"]
    corrected = model.fit["cross_validated"]["within_10pct"]  # on archs each fold was not fitted on
    assert corrected > plain + 0.05 and corrected >= 0.95, (plain, corrected)
    factor = model.predict_many(archs) / (x @ np.asarray(model.coef))
    clip = CORRECTION["clip"]
    assert np.all((factor >= 1 - clip - 1e-12) & (factor <= 1 + clip + 1e-12))  # bounded, as documented
    model.save(tmp_path / "m.json")
    loaded = load_model(tmp_path / "m.json")
    assert np.array_equal(loaded.predict_many(archs), model.predict_many(archs))  # JSON holds the whole model
    assert [loaded.predict_ms(a) for a in archs[:5]] == pytest.approx(list(model.predict_many(archs[:5])), rel=1e-12)
    # below min_archs the model is the sum alone
    assert fit_model(archs[:CORRECTION["min_archs"] - 1], y[:CORRECTION["min_archs"] - 1], valid, {}).correction is None


def test_profile_continues_where_it_stopped_and_fit_refuses_an_unfinished_one(tmp_path, capsys):
    out = tmp_path / "d.json"
    first = profile_device(SPACE, FAST, 3, out, repeats=1)
    assert main(["latency", "fit", str(out), "--out", str(tmp_path / "m.json")]) == 2  # 3 < 19 features
    again = profile_device(SPACE, FAST, 5, out, repeats=1)
    assert again.measurements[:3] == first.measurements and len(again.measurements) == 5
    before = out.read_text()
    assert main(["latency", "profile", "--input-size", "16", "--n", "5", "--out", str(out)]) == 2
    assert "another latency input_size (8, now 16)" in capsys.readouterr().err and out.read_text() == before  # nothing rewritten
    unfinished = profile_device(SPACE, FAST, 5, tmp_path / "u.json", repeats=1)
    header = {**unfinished.header, "n": 30, "measurements": unfinished.measurements}
    (tmp_path / "u.json").write_text(json.dumps(header))
    assert main(["latency", "fit", str(tmp_path / "u.json"), "--out", str(tmp_path / "m.json")]) == 2
    assert "incomplete (5 of 30" in capsys.readouterr().err and not (tmp_path / "m.json").exists()


def test_bad_model_and_profile_files_are_one_line_exit_2(profiled, tmp_path, capsys):
    folder, _ = profiled
    good = json.loads((folder / "model.json").read_text())
    cases = {"empty.json": "", "text.json": "not json", "cut.json": (folder / "device.json").read_text()[:200],
             "version.json": json.dumps({**good, "version": 99}),
             "size.json": json.dumps({**good, "valid_for": {**good["valid_for"], "latency": {
                 **good["valid_for"]["latency"], "input_size": 16}}}),
             "space.json": json.dumps({**good, "valid_for": {**good["valid_for"], "space": "edge@0"}}),
             "device.json": json.dumps({**good, "valid_for": {**good["valid_for"], "fingerprint": {
                 **good["valid_for"]["fingerprint"], "cpu": "another CPU"}}})}
    expect = {"empty.json": "is empty", "text.json": "not valid JSON", "cut.json": "not valid JSON",
              "version.json": "version 99", "size.json": "input_size 16", "space.json": "space edge@0",
              "device.json": "another device"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["latency", "check", str(tmp_path / name), str(folder / "device.json")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expect[name] in err, (name, err)


def test_check_holds_out_what_the_model_was_fitted_on(profiled, tmp_path, capsys):
    folder, profile = profiled
    assert main(["latency", "check", str(folder / "model.json"), str(folder / "device.json")]) == 2
    assert "every architecture" in capsys.readouterr().err
    held = profile_device(SPACE, FAST, 6, tmp_path / "held.json", seed=1, repeats=1, corners=False)
    assert main(["latency", "check", str(folder / "model.json"), str(held.path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["skipped_fitted"] == 0 and -1 <= result["spearman"] <= 1


def test_meter_predicts_latency_without_timing_and_times_candidates_near_the_limit(profiled):
    folder, profile = profiled
    model = load_model(folder / "model.json")
    assert model.valid_for["space"] == space_id(SPACE) and model.valid_for["latency"]["input_size"] == 8
    arch = profile.archs()[0]
    meter = CostMeter(FAST, None, 8, predictor=model)
    cost = meter.measure(arch)
    assert cost["latency_source"] == "predicted" and cost["latency_runs"] == 0
    assert cost["latency_ms"] == cost["latency_predicted_ms"] == pytest.approx(model.predict_ms(arch))
    assert cost["latency_measured_ms"] is None if "latency_measured_ms" in cost else True
    near = replace(meter, confirm_near_ms=cost["latency_predicted_ms"], _cache={})  # right at the limit: timed
    timed = near.measure(arch)
    assert timed["latency_source"] == "measured" and timed["latency_runs"] > 0
    assert timed["latency_ms"] == timed["latency_measured_ms"] and timed["latency_predicted_ms"] == cost["latency_ms"]
    confirmed = meter.confirm_predicted(arch)  # a front member: timed, and the cache now holds the measured value
    assert meter.measure(arch)["latency_ms"] == confirmed["latency_ms"] and confirmed["latency_source"] == "measured"


def test_search_refuses_a_model_for_another_input_size_before_writing_anything(profiled, tmp_path):
    from cspnas.errors import CspnasError
    from cspnas.search.runner import run_search
    from cspnas.search.settings import SearchSettings

    folder, _ = profiled  # a model of 8x8 inputs
    with pytest.raises(CspnasError, match="--confirm-latency confirms a --latency-model"):
        SearchSettings(name="x", confirm_latency=True)
    settings = SearchSettings(name="x", results_dir=str(tmp_path), budget=1, image_size=16,
                              latency_backend="torch", latency_model=str(folder / "model.json"))
    with pytest.raises(CspnasError, match=r"model.json: latency model is for input_size 8, the search uses 16"):
        run_search(settings, live=False)
    assert not (tmp_path / "x").exists()


def test_fit_adds_a_runs_measured_latencies_and_refuses_a_run_of_another_space(profiled, tmp_path):
    import yaml
    from run_fixture import make_run

    from cspnas.errors import CspnasError

    folder, profile = profiled
    run = make_run(tmp_path, n=6)  # measured at 8x8 like the profile (1 input channel: allowed)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for space, ok in ((load_space("edge"), False), (SPACE, True)):
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "space_yaml": space.source}))
        if not ok:
            with pytest.raises(CspnasError, match="searched space edge@"):
                fit_from(folder / "device.json", [run])
            continue
        model, warnings = fit_from(folder / "device.json", [run])
        extra = set(pd.read_csv(run / "trials.csv")["arch_hash"]) - {m["arch_hash"] for m in profile.measurements}
        assert model.fit["archs"] == len(profile.measurements) + len(extra) and extra
        assert model.fit["runs"] == [str(run)] and any("no device fingerprint" in w for w in warnings)


def test_search_predicts_with_the_model_and_a_resume_keeps_its_copy(profiled, tmp_path):
    import yaml

    from cspnas.search.runner import run_search
    from cspnas.search.settings import SearchSettings, search_training

    folder, _ = profiled  # a torch-eager model of the default space at 8x8 (digits' size)
    model_file = tmp_path / "model.json"
    model_file.write_bytes((folder / "model.json").read_bytes())
    settings = SearchSettings(name="lm", results_dir=str(tmp_path), budget=2, dataset="digits", train_subset=200,
                              latency_backend="torch", latency_model=str(model_file), concurrency=1,
                              train=replace(search_training(), epochs=1))
    run_search(settings, live=False, dashboard=False)
    run = tmp_path / "lm"
    trials = pd.read_csv(run / "trials.csv")
    done = trials[trials["state"] == "complete"]
    assert len(done) == 2 and (done["latency_source"] == "predicted").all()
    assert (done["latency_ms"] == done["latency_predicted_ms"]).all() and done["latency_measured_ms"].isna().all()
    assert json.loads((run / "latency_model.json").read_text()) == json.loads(model_file.read_text())
    assert yaml.safe_load((run / "config.yaml").read_text())["settings"]["latency_model"] == str(model_file)

    model_file.write_text("not json any more")  # the user's file changes; the run keeps predicting with its copy
    run_search(resume=run, budget=3, live=False, dashboard=False)
    trials = pd.read_csv(run / "trials.csv")
    assert (trials["state"] == "complete").sum() == 3 and (trials["latency_source"] == "predicted").all()


def test_a_tampered_correction_is_one_line_not_a_hang(tmp_path, capsys):
    from cspnas.latency_model.model import fit_model

    archs = design(SPACE, 120)
    x = design_matrix(archs, 8)
    calls = x[:, FEATURES.index("calls")]
    y = x @ np.linspace(0.5, 2.0, len(FEATURES)) * np.where(calls > np.median(calls), 1.1, 0.95)  # trees split
    valid = {"space": space_id(SPACE), "latency": {"input_size": 8}, "fingerprint": {}}
    good = fit_model(archs, y, valid, {}).to_dict()
    assert good["correction"]["trees"][3]["left"][0] != -1
    for label, edit in (("loop", lambda t: t["left"].__setitem__(0, 0)),  # a walk that would never end
                        ("feature", lambda t: t["feature"].__setitem__(0, 999)),
                        ("short", lambda t: t["value"].pop())):
        data = json.loads(json.dumps(good))
        edit(data["correction"]["trees"][3])
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(CspnasError, match="correction has a malformed tree; fit it again"):
            load_model(path)
