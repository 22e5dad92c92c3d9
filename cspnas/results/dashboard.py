"""Write RUN/dashboard.html: one self-contained page (plotly.js embedded) with every plot of a run."""
from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from cspnas.fsutil import write_atomic
from cspnas.results import figures
from cspnas.results.importance import param_importances
from cspnas.objectives import OBJECTIVES, specs
from cspnas.results.report import (MARGINAL_NOTE, finalists_note, finalists_table, front_table, run_totals,
                                   shown_objectives, totals_line)
from cspnas.run_format import Run, load_run
from cspnas.runlock import search_is_running

DASHBOARD_NAME = "dashboard.html"
# While trials are running the page reloads itself, so it follows the search the writer refreshes;
# once no search holds the run (finished, interrupted, killed) it stops.
RELOAD_SECONDS = 30
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; } .meta { color: #555; margin: 2px 0; }
section { margin: 28px 0; } .note { color: #8a6d00; background: #fff8e1; padding: 8px 12px; border-radius: 4px; }
table { border-collapse: collapse; font-size: 14px; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def write_dashboard(run_path: str | Path, *, importance: bool = True) -> Path:
    """Render the dashboard of the run at `run_path` and atomically replace RUN/dashboard.html; returns its path.

    importance=False skips the fANOVA fit (about a second), e.g. for refreshes during a search.
    """
    run = load_run(run_path)
    page = render_dashboard(run, importance=importance)
    target = run.path / DASHBOARD_NAME
    write_atomic(target, page)
    return target


def render_dashboard(run: Run, *, importance: bool = True) -> str:
    pts = figures.split_points(run)
    sections: list[str] = [_header(run), _front_html(run)]
    finalists = finalists_table(run)
    if len(finalists):
        sections.append(_finalists_html(run, finalists))
    others = [s for s in specs(run.objectives) if s.name != "accuracy"]
    for spec in others:
        sections.append(_section(f"Accuracy vs {spec.title}", figures.tradeoff_figure(run, pts, spec.column),
                                 _empty_note(pts)))
    sections.append(_section("The CSP question", figures.csp_figure(pts), "no complete trial yet"))
    if len(others) == 2:
        sections.append(_section(f"Accuracy, {others[0].title} and {others[1].title} in 3-D",
                                 figures.scatter3d_figure(run, pts), _empty_note(pts)))
    sections.append(_section("Hypervolume", figures.hypervolume_figure(run), "no trial has completed yet"))
    sections.append(_section("Design knobs", figures.knobs_figure(run, pts),
                             "no sampled knobs (p. columns) or no complete trial yet"))
    if importance:
        imp = param_importances(run.path / "study.db", run.name)
        fig = figures.importance_figure(imp.values, imp.trials) if imp.values else None
        sections.append(_section("Knob importance", fig, imp.note))
    running = (run.trials["state"] == "running").any() and search_is_running(run.path)
    reload = f'<meta http-equiv="refresh" content="{RELOAD_SECONDS}">' if running else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>cspnas: {html.escape(run.name)}</title>{reload}<style>{STYLE}</style>"
        # plotly.js inline (what include_plotlyjs=True does), once for all plots: works offline
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body>\n"
        + "\n".join(sections) + "\n</body></html>\n"
    )


def _header(run: Run) -> str:
    c, s = run.config, run.setting
    lat = c.get("latency") or {}
    limits = [f"{name} <= {OBJECTIVES[name].format(limit)}" for name, limit in run.limits.items() if limit is not None]
    lines = [
        "objectives: " + ", ".join(f"{n} ({OBJECTIVES[n].direction})" for n in run.objectives),
        f"data set {s('dataset', '?')}, {s('epochs', '?')} epochs per trial, budget {s('budget', '?')} trained, "
        f"sampler {s('sampler', '?')}, seed {s('seed', '?')}",
        "constraints: " + (", ".join(limits) or "none"),
        f"latency measured on {lat.get('device', '?')}, batch {lat.get('batch_size', '?')}, "
        f"{lat.get('threads', '?')} thread(s), {lat.get('dtype', '?')}, input "
        f"{lat.get('in_chs', '?')}x{lat.get('input_size', '?')}x{lat.get('input_size', '?')}",
        totals_line(run_totals(run)),
        f"generated {dt.datetime.now().astimezone().isoformat(timespec='seconds')} from {run.path}",
    ]
    return (f"<header><h1>cspnas run {html.escape(run.name)}</h1>"
            + "".join(f"<p class=\"meta\">{html.escape(line)}</p>" for line in lines) + "</header>")


def _front_html(run: Run) -> str:
    front = front_table(run, "accuracy")
    if front.empty:
        return "<section><h2>Pareto front</h2><p class=\"note\">no feasible complete trial yet</p></section>"
    rows = []
    shown = shown_objectives(front)
    for r in front.to_dict(orient="records"):
        cells = [str(r["trial"]), html.escape(str(r["arch_summary"])), *(s.cell(r) for s in shown),
                 " ".join(w for w, on in (("&#9670; knee", r["knee"]), ("marginal", r["marginal"])) if on)]
        numeric = ' class="num"'
        rows.append("<tr>" + "".join(
            f"<td{'' if i in (1, len(cells) - 1) else numeric}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    headers = ("trial", "architecture", *(s.header for s in shown), "")
    head = "".join(f"<th>{h}</th>" for h in headers)
    note = f'<p class="note">{MARGINAL_NOTE}</p>' if front["marginal"].any() else ""
    return f"<section><h2>Pareto front</h2><table><tr>{head}</tr>{''.join(rows)}</table>{note}</section>"


def _finalists_html(run: Run, finalists) -> str:
    """How each finalist moved: brief -> final accuracy and rank, test accuracy, a figure."""
    acc = OBJECTIVES["accuracy"]
    rows = []
    for r in finalists.to_dict(orient="records"):
        test = "-" if r["final_test_acc"] != r["final_test_acc"] else acc.format(r["final_test_acc"])
        cells = [str(r["trial"]), html.escape(str(r["arch_summary"])), acc.format(r["brief_accuracy"]),
                 acc.format(r["final_val_acc"]), test, f"{r['brief_rank']} &rarr; {r['final_rank']}",
                 ("&#9670; knee" if r["knee"] else "front") if r["on_front"] else ""]
        rows.append("<tr>" + "".join(f"<td{'' if i in (1, 6) else ' class=num'}>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("trial", "architecture", "brief val.", "final val.", "test",
                                             "rank (brief &rarr; final)", ""))
    fig = figures.finalists_figure(run, finalists)
    div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG) if fig is not None else ""
    return (f"<section><h2>Finalists</h2><p class=\"meta\">{html.escape(finalists_note(run) or '')}</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>{div}</section>")


def _section(title: str, fig: go.Figure | None, note: str) -> str:
    if fig is None:
        return f"<section><h2>{html.escape(title)}</h2><p class=\"note\">{html.escape(note)}</p></section>"
    div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)
    return f"<section><h2>{html.escape(title)}</h2>{div}</section>"


def _empty_note(pts: figures.Points) -> str:
    return "" if len(pts.complete) else "no complete trial yet"
