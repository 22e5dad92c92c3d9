"""End to end on a real CI-sized search: search -> report -> dashboard -> export -> train."""
import json
from pathlib import Path

import pandas as pd
import pytest

import cspnas
from cspnas.cli import main
from cspnas.search.runner import run_search
from cspnas.search.settings import SearchSettings, search_training
from headless import find_chromium, load_page


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    out = run_search(SearchSettings(name="ci", results_dir=str(root), budget=4,
                                    train=search_training(epochs=1), concurrency=2, device="cpu", sampler="random",
                                    latency_min_run_time_s=0.05), live=False)
    import ray

    ray.shutdown()
    assert len(out.front) >= 1
    return out.run_dir


def test_python_api_loads_the_run(run):
    r = cspnas.load_run(run)
    assert isinstance(r.trials, pd.DataFrame) and len(r.trials) == 4
    assert list(r.front["trial"]) == list(pd.read_csv(run / "pareto.csv")["trial"])
    best = r.front.merge(r.trials[["trial", "arch_json"]], on="trial").iloc[0]
    model = cspnas.build_model(json.loads(best["arch_json"]))
    assert sum(p.numel() for p in model.parameters()) == int(r.front.iloc[0]["params"])


def test_report_json_matches_the_front(run, capsys):
    assert main(["report", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    front = pd.read_csv(run / "pareto.csv")
    rows = data["front"] if isinstance(data, dict) else data
    assert sorted(r["trial"] for r in rows) == sorted(front["trial"])


def test_dashboard_of_a_real_run(run, tmp_path):
    assert main(["dashboard", str(run)]) == 0
    page = run / "dashboard.html"
    html = page.read_text()
    import re

    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']https?:", html)  # plotly.js is embedded
    if find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y --no-install-recommends chromium)")
    report = load_page(page, screenshot=tmp_path / "real-run.png",
                       ready="document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot').length > 0 && "
                             "[...document.querySelectorAll('.js-plotly-plot')].every(d => d.querySelector('.main-svg'))",
                       probe="({plots: document.querySelectorAll('.js-plotly-plot').length})")
    assert report.errors == []
    assert [u for u in report.requests if not u.startswith("file://")] == []
    assert report.state["plots"] >= 6


def test_export_all_formats_then_train_the_export(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run), "--pick", "knee", "--format", "json,onnx,torchscript,safetensors",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx: max abs diff vs PyTorch" in printed and "model.ts: max abs diff vs PyTorch" in printed
    for name in ("arch.json", "weights.safetensors", "model.onnx", "model.ts", "MODEL.md"):
        assert (out / name).is_file(), name
    trained = tmp_path / "trained"
    assert main(["train", str(out / "arch.json"), "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--out", str(trained)]) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert (trained / "weights.safetensors").is_file()


def test_export_never_overwrites(run, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
