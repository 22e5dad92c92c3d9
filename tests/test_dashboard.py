"""`cspnas dashboard`: a self-contained page whose plots show the run, checked in a real browser."""
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cspnas.cli import main
from cspnas.errors import CspnasError
from cspnas.results import figures
from cspnas.results.dashboard import render_dashboard, write_dashboard
from cspnas.results.importance import param_importances
from cspnas.run_format import load_run
from cspnas.runlock import RunLock
from headless import find_chromium, load_page
from run_fixture import make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # a latency target (so that line is drawn) that a few trials miss, on top of the MACs limit
    return make_run(tmp_path_factory.mktemp("runs"), 12, target_latency_quantile=0.8)


class _Tags(HTMLParser):
    """Every src/href of script, link, img and iframe tags (script bodies are not parsed as HTML)."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        if tag in ("script", "link", "img", "iframe") and (attrs.get("src") or attrs.get("href")):
            self.urls.append(attrs.get("src") or attrs.get("href"))


def test_dashboard_is_self_contained(run_dir):
    path = write_dashboard(run_dir)
    assert path == run_dir / "dashboard.html"
    text = path.read_text()
    tags = _Tags()
    tags.feed(text)
    assert tags.urls == []  # nothing fetched from anywhere, CDN or local
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is inline
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    run = load_run(run_dir)
    for row in run.front.itertuples():
        assert row.arch_summary in text


def test_tradeoff_plots_mark_front_infeasible_and_limits(run_dir):
    run = load_run(run_dir)
    pts = figures.split_points(run)
    assert len(pts.infeasible) == (run.trials["state"] == "infeasible").sum() > 0
    assert sorted(pts.front["trial"]) == sorted(run.front["trial"])
    for x, key in (("latency_ms", "latency"), ("macs", "macs")):
        fig = figures.tradeoff_figure(run, pts, x)
        names = {t.name: t for t in fig.data}
        assert sorted(names["Pareto front (3 objectives)"].x) == sorted(run.front[x])
        assert len(names["knee"].x) == 1
        assert len(names["infeasible (untrained at 0)"].x) == len(pts.infeasible)
        assert [s.x0 for s in fig.layout.shapes] == [pytest.approx(run.limits[key])]
        assert "trial" in names["complete trials"].text[0]


def test_no_limit_lines_without_constraints(tmp_path):
    run = load_run(make_run(tmp_path, 4, max_macs=1e12))
    pts = figures.split_points(run)
    assert run.limits["latency"] is None
    assert len(figures.tradeoff_figure(run, pts, "latency_ms").layout.shapes) == 0
    assert pts.infeasible.empty


def test_knob_axes_use_codes_for_categories(run_dir):
    run = load_run(run_dir)
    pts = figures.split_points(run)
    fig = figures.knobs_figure(run, pts)
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert list(dims) == [c[2:] for c in run.knob_columns] + ["MACs", "latency (ms)", "validation accuracy"]
    act = dims["act"]
    assert set(act.ticktext) == set(pts.complete["p.act"]) and sorted(set(act.values)) == list(act.tickvals)
    for col in ("p.s0.split_ratio", "p.s1.split_ratio"):
        has_missing = pts.complete[col].isna().any()
        assert ("n/a" in (dims[col[2:]].ticktext or ())) == has_missing


def test_stage_label():
    assert figures.stage_label('{"stages": [{"stage_type": "csp", "split_ratio": 0.25}, '
                               '{"stage_type": "csp", "split_ratio": 0.75}]}') == ("csp", 0.5)
    kind, ratio = figures.stage_label('{"stages": [{"stage_type": "plain"}, {"stage_type": "plain"}]}')
    assert kind == "plain" and ratio != ratio
    assert figures.stage_label('{"stages": [{"stage_type": "plain"}, {"stage_type": "fusion_last", '
                               '"split_ratio": 0.4}]}') == ("mixed", 0.4)


def test_csp_figure_compares_stage_types_at_matched_cost(run_dir):
    pts = figures.split_points(load_run(run_dir))
    fig = figures.csp_figure(pts)
    scatter = [t for t in fig.data if t.xaxis == "x"]
    best = [t for t in fig.data if t.xaxis == "x2"]
    assert sum(len(t.x) for t in scatter) == len(pts.complete)
    assert {t.name for t in scatter} == {t.name for t in best}
    top = max(max(t.y) for t in best)
    assert top == pytest.approx(pts.complete["accuracy"].max())


def test_importance_from_the_study(run_dir):
    run = load_run(run_dir)
    imp = param_importances(run_dir / "study.db", "fixture")
    assert imp.values and imp.note == ""
    assert set(imp.values) <= {c[2:] for c in run.knob_columns}
    assert sum(imp.values.values()) == pytest.approx(1.0)
    assert imp.trials == (run.trials["state"] == "complete").sum()


def test_importance_degrades_to_a_note(tmp_path):
    few = make_run(tmp_path, 2, states={0: "complete", 1: "failed"}, max_macs=1e12)
    imp = param_importances(few / "study.db")
    assert imp.values == {} and "at least 2" in imp.note
    missing = tmp_path / "nowhere" / "study.db"
    imp = param_importances(missing)
    assert imp.values == {} and "no study.db" in imp.note and not missing.exists()
    (tmp_path / "junk.db").write_text("not sqlite")
    assert param_importances(tmp_path / "junk.db").note.startswith("could not compute")
    page = render_dashboard(load_run(few))
    assert "at least 2" in page


def test_failed_refresh_keeps_the_old_dashboard(run_dir, tmp_path):
    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    first = write_dashboard(copy, importance=False).read_bytes()
    (copy / "trials.csv").write_text("")
    with pytest.raises(CspnasError):
        write_dashboard(copy)
    assert (copy / "dashboard.html").read_bytes() == first
    assert not [p for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_running_search_page_reloads_itself_until_the_search_ends(tmp_path):
    running = make_run(tmp_path, 3, states={2: "running"})
    with RunLock(running):  # a search holds the run
        assert 'http-equiv="refresh"' in render_dashboard(load_run(running), importance=False)
    # interrupted or killed: the trial still reads "running", but nothing will update the page
    assert 'http-equiv="refresh"' not in render_dashboard(load_run(running), importance=False)


def test_dashboard_cli(run_dir, capsys):
    assert main(["dashboard", str(run_dir), "--no-importance"]) == 0
    assert str(run_dir / "dashboard.html") in capsys.readouterr().out
    assert main(["dashboard", str(run_dir / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium not installed (apt-get install -y --no-install-recommends chromium)")
def test_dashboard_renders_in_headless_chromium(run_dir, tmp_path):
    page = write_dashboard(run_dir)
    shot = tmp_path / "dashboard.png"
    report = load_page(
        page, screenshot=shot,
        ready="document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot').length > 0 && "
              "[...document.querySelectorAll('.js-plotly-plot')].every(d => d.querySelector('.main-svg'))",
        probe="({plots: document.querySelectorAll('.js-plotly-plot').length, "
              "rendered: [...document.querySelectorAll('.js-plotly-plot')]"
              ".filter(d => d.querySelector('.main-svg')).length, "
              "points: document.querySelectorAll('.scatterlayer .point').length, "
              "webgl: document.querySelectorAll('.gl-container canvas, canvas.gl-canvas').length, "
              "noWebgl: document.body.innerText.includes('WebGL is not supported')})",
    )
    assert report.errors == []
    assert [u for u in report.requests if not u.startswith("file://")] == []  # works offline: no network at all
    # 7 plots: 2 trade-offs, CSP question, 3-D, hypervolume, knobs, importance
    assert report.state["plots"] == report.state["rendered"] == 7
    pts = figures.split_points(load_run(run_dir))
    per_tradeoff = len(pts.complete) + len(pts.front) + 1 + len(pts.infeasible)  # trials, front, knee, infeasible
    assert report.state["points"] >= 2 * per_tradeoff  # the markers were actually drawn
    assert report.state["webgl"] > 0 and not report.state["noWebgl"]
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
