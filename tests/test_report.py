"""Reading run directories and `cspnas report` on a real (fixture) run."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from cspnas.cli import main
from cspnas.errors import CspnasError
from cspnas.results.report import front_table, print_report, run_totals
from cspnas.run_format import load_run
from run_fixture import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), 12)


def test_load_run_reads_every_file(run_dir):
    run = load_run(run_dir)
    raw = pd.read_csv(run_dir / "trials.csv")
    assert run.name == "fixture" and run.setting("dataset") == "digits"
    assert list(run.trials["trial"]) == list(raw["trial"])
    assert run.trials["feasible"].dtype == bool
    assert set(run.trials["state"]) <= {"complete", "infeasible", "pruned", "failed"}
    assert run.knob_columns == [c for c in raw.columns if c.startswith("p.")]
    assert list(run.front["trial"]) == list(pd.read_csv(run_dir / "pareto.csv")["trial"])
    assert run.front["knee"].sum() == 1
    # only complete feasible trials can be on the front
    on_front = run.trials[run.trials["trial"].isin(run.front["trial"])]
    assert (on_front["state"] == "complete").all() and on_front["feasible"].all()
    kept = run.weights_path(run.trial(int(run.front["trial"].iloc[0])))
    assert kept is not None and kept.is_file()
    assert run.trial(999) is None


def test_totals_match_the_trials_file(run_dir):
    run = load_run(run_dir)
    raw = pd.read_csv(run_dir / "trials.csv")
    t = run_totals(run)
    counts = raw["state"].value_counts()
    assert t.trials == len(raw)
    for state in ("complete", "infeasible", "pruned", "failed"):
        assert getattr(t, state) == counts.get(state, 0)
    assert t.front_size == len(pd.read_csv(run_dir / "pareto.csv"))
    assert t.hypervolume == pytest.approx(raw["hypervolume"].max())
    start = pd.to_datetime(raw["started_at"]).min()
    end = pd.to_datetime(raw["completed_at"]).max()
    assert t.wall_seconds == pytest.approx((end - start).total_seconds())


@pytest.mark.parametrize("sort, column, ascending", [("accuracy", "accuracy", False), ("macs", "macs", True),
                                                      ("latency", "latency_ms", True), ("params", "params", True)])
def test_front_table_sorts(run_dir, sort, column, ascending):
    table = front_table(load_run(run_dir), sort)
    assert list(table[column]) == sorted(table[column], reverse=not ascending)


def test_report_table_shows_every_front_member(run_dir):
    run = load_run(run_dir)
    buffer = io.StringIO()
    print_report(run, "accuracy", Console(file=buffer, width=160))
    text = buffer.getvalue()
    for row in run.front.itertuples():
        assert row.arch_summary in text
    assert "◆" in text
    assert f"{len(run.trials)} trials" in text and "hypervolume" in text and "wall time" in text


def test_report_cli_json_and_csv(run_dir, capsys):
    assert main(["report", str(run_dir), "--json", "--sort", "latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert sorted(r["trial"] for r in out["front"]) == sorted(pareto["trial"])
    latencies = [r["latency_ms"] for r in out["front"]]
    assert latencies == sorted(latencies)
    assert out["totals"]["trials"] == 12 and sum(r["knee"] for r in out["front"]) == 1

    assert main(["report", str(run_dir), "--csv", "--sort", "macs"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv["macs"]) == sorted(pareto["macs"])
    assert {"trial", "arch_summary", "accuracy", "macs", "params", "latency_ms", "latency_iqr_ms", "knee"} <= set(csv)


def test_report_while_search_is_running(tmp_path, capsys):
    # the first trials: one still running, no pareto.csv written yet
    run_dir = make_run(tmp_path, 3, states={0: "pruned", 1: "failed", 2: "running"}, with_pareto=False)
    run = load_run(run_dir)
    assert run.front.empty and run_totals(run).running == 1 and run_totals(run).hypervolume is None
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "front is empty" in out and "1 running" in out


def _rewrite(d: Path, change) -> None:
    change(pd.read_csv(d / "trials.csv")).to_csv(d / "trials.csv", index=False)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "trials.csv").unlink(), "no trials.csv"),
    (lambda d: (d / "config.yaml").unlink(), "no config.yaml"),
    (lambda d: (d / "config.yaml").write_text("name: [unclosed\n"), "unreadable config"),
    (lambda d: (d / "config.yaml").write_text("- just\n- a list\n"), "expected a mapping"),
    (lambda d: (d / "trials.csv").write_text(""), "no trials yet"),
    (lambda d: _rewrite(d, lambda t: t.iloc[:0]), "no trials yet"),  # header only
    (lambda d: _rewrite(d, lambda t: t.drop(columns=["macs"])), "missing column"),
    (lambda d: _rewrite(d, lambda t: t.assign(state="weird")), "unknown trial state"),
    (lambda d: _rewrite(d, lambda t: t.assign(trial="x")), "whole numbers"),
    (lambda d: (d / "trials.csv").write_bytes(b"trial,state\n\xff\xfe\x00bad,\"unterminated\n"), "trials.csv"),
])
def test_damaged_run_is_one_clear_error(run_dir, tmp_path, damage, message):
    run_dir = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    damage(run_dir)
    with pytest.raises(CspnasError) as e:
        load_run(run_dir)
    assert message in str(e.value) and "\n" not in str(e.value)


# ~600 bytes that expand to 9^9 strings through aliases of aliases: read with the bounded YAML reader
ALIAS_BOMB = "settings: {name: bomb}\nx:\n" + "".join(
    f"  - &{a} [{', '.join([f'*{p}' if p else 'lol'] * 9)}]\n" for p, a in zip(["", *"abcdefgh"], "abcdefghi"))


def test_a_config_alias_bomb_is_one_line_for_readers_and_resume(run_dir, tmp_path):
    from cspnas.run_format import read_config

    run_dir = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    (run_dir / "config.yaml").write_text(ALIAS_BOMB)
    with pytest.raises(CspnasError, match=r"unreadable config \(the YAML expands to more than [\d,]+ values"):
        load_run(run_dir)
    with pytest.raises(CspnasError, match=r"corrupt YAML \(the YAML expands .*another --name$"):
        read_config(run_dir)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(CspnasError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "trials.csv").write_text("trial\n")
    with pytest.raises(CspnasError, match="pass its folder"):
        load_run(tmp_path / "trials.csv")
    with pytest.raises(CspnasError, match="not a run directory"):
        load_run(tmp_path)


def test_cli_error_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cspnas.cli", "report", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no such run directory" in proc.stderr and proc.stdout == ""


def test_lazy_top_level_exports():
    # `import cspnas` must stay light; load_run/build_model come on first use (module __getattr__)
    code = ("import sys, cspnas; heavy = [m for m in ('torch', 'pandas', 'plotly') if m in sys.modules]; "
            "assert not heavy, heavy; from cspnas.run_format import load_run; "
            "from cspnas.models import build_model; "
            "assert cspnas.load_run is load_run and cspnas.build_model is build_model; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]


def test_totals_show_the_driver_busy_share_of_the_last_search_session(run_dir, tmp_path):
    import yaml

    from cspnas.results.report import totals_line

    assert run_totals(load_run(run_dir)).driver_busy_share is None  # no search recorded it
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["driver"] = [{"wall_seconds": 10.0, "busy_share": 0.5, "idle_share": 0.5},
                        {"wall_seconds": 20.0, "busy_share": 0.123, "idle_share": 0.877}]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    totals = run_totals(load_run(run))
    assert totals.driver_busy_share == pytest.approx(0.123)
    assert totals_line(totals).endswith("; driver busy 12%")
