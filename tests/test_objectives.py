"""Objectives as data: --objectives, the memory objective and its limit, and everything derived from the table."""
import subprocess
import sys

import optuna
import pytest
import yaml
from run_fixture import make_run

from cspnas.cli import build_parser, main
from cspnas.commands.search_cmd import _settings
from cspnas.errors import CspnasError
from cspnas.objectives import (DEFAULT_OBJECTIVES, OBJECTIVES, PICKS, parse_objectives, references,
                               run_objectives, run_references)
from cspnas.results import figures
from cspnas.results.dashboard import render_dashboard
from cspnas.results.export import pick_trial
from cspnas.results.report import front_table, report_dict
from cspnas.run_format import load_run, objectives_of, open_storage
from cspnas.search.settings import SearchSettings


def test_objectives_flag_and_memory_limit_become_settings():
    args = build_parser().parse_args(["search", "--name", "o", "--objectives", "accuracy,latency",
                                      "--max-memory", "4MB", "--target-latency", "8ms"])
    s = _settings(args)
    assert s.objectives == ("accuracy", "latency")
    assert s.constraints.max_memory == 4_000_000 and s.constraints.max_latency_ms == 8.0
    assert s.constraints.limits() == {"params": None, "macs": None, "latency": 8.0, "memory": 4_000_000}
    resumed = SearchSettings.from_dict(yaml.safe_load(yaml.safe_dump(s.to_dict())))  # as config.yaml keeps it
    assert resumed.objectives == s.objectives and resumed.constraints == s.constraints
    assert _settings(build_parser().parse_args(["search", "--name", "d"])).objectives == DEFAULT_OBJECTIVES


@pytest.mark.parametrize("text, message", [("latency,macs", "accuracy must be one of them"),
                                           ("accuracy,speed", "unknown objective speed"),
                                           ("accuracy,macs,macs", "listed twice")])
def test_bad_objectives_are_one_clear_error(text, message):
    with pytest.raises(CspnasError, match=message):
        parse_objectives(text)


def test_bad_objectives_on_the_command_line_exit_2_and_write_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cspnas.cli", "search", "--objectives", "latency", "--name", "x",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "accuracy must be one of them" in proc.stderr
    assert not any(tmp_path.iterdir())
    assert main(["search", "--max-memory", "4XB", "--name", "x", "--results-dir", str(tmp_path)]) == 2


def test_constraints_derive_from_the_table():
    limits = {"memory": 50_000, "latency": 5.0}
    values, violations = SearchSettings(name="c").constraints.__class__(max_memory=50_000, max_latency_ms=5.0) \
        .check({"memory_bytes": 60_000, "latency_ms": 4.0, "macs": 1e6, "params": 1e4})
    assert values == pytest.approx({"memory": 0.2, "latency": -0.2})
    assert violations == ["memory 60 kB > 50 kB"]
    refs = references(("accuracy", "latency", "memory"), limits, large=lambda: pytest.fail("no need to measure"))
    assert refs == {"accuracy": 0.0, "latency": 5.0, "memory": 50_000}
    assert references(("accuracy", "macs"), {}, large=lambda: {"macs": 3e6}) == {"accuracy": 0.0, "macs": 6e6}
    assert set(PICKS) == {"best", "smallest", "fastest", "leanest"}


@pytest.fixture(scope="module")
def two_objective_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"), 10, objectives=("accuracy", "memory"))


def test_a_two_objective_run_is_recorded_and_shown_as_such(two_objective_run):
    run = load_run(two_objective_run)
    assert run.objectives == ("accuracy", "memory")
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run.path / "study.db"))
    assert study.metric_names == ["accuracy", "memory_bytes"]  # optuna-dashboard labels its axes
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    # the front is non-dominated in accuracy and memory only: a 2-D staircase
    front = run.front.sort_values("memory_bytes")
    assert front["accuracy"].is_monotonic_increasing and len(front) >= 1
    assert [o.column for o in objectives_of(run.config)] == ["accuracy", "memory_bytes"]
    page = render_dashboard(run, importance=False)
    assert "Accuracy vs memory" in page and "Accuracy vs latency" not in page and "in 3-D" not in page
    assert figures.scatter3d_figure(run, figures.split_points(run)) is None
    leanest = pick_trial(run, "leanest")
    assert leanest["memory_bytes"] == run.front["memory_bytes"].min()
    assert list(front_table(run, "memory")["memory_bytes"]) == sorted(run.front["memory_bytes"])
    assert report_dict(run)["objectives"] == ["accuracy", "memory"]


def test_runs_of_the_previous_version_load_with_the_default_objectives(tmp_path):
    run_dir = make_run(tmp_path, 6)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    refs = {k: v for k, v in config.pop("references").items() if k != "accuracy"}  # accuracy's is fixed
    del config["settings"]["objectives"]
    config.update(macs_ref=refs["macs"], latency_ref_ms=refs["latency"])  # how 0.1 recorded them
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_objectives(config) == DEFAULT_OBJECTIVES and run_references(config) == refs
    run = load_run(run_dir)
    assert run.objectives == DEFAULT_OBJECTIVES
    assert [o.ref for o in run.bound_objectives()] == [0.0, refs["macs"], refs["latency"]]
    assert SearchSettings.from_dict(config["settings"]).objectives == DEFAULT_OBJECTIVES


def test_every_objective_is_complete():
    for spec in OBJECTIVES.values():
        assert spec.direction in ("max", "min") and spec.label and spec.format(1.0)
        assert (spec.ref is not None) or spec.limit, f"{spec.name}: no rule for its reference"
        if spec.limit:
            assert spec.flag and spec.parse
            assert spec.limit in SearchSettings.__dataclass_fields__["constraints"].default_factory().__dict__
