"""Plotly figures of a run: trade-offs, 3-D front, hypervolume, knobs, importance, the CSP question, finalists."""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cspnas.objectives import BY_COLUMN, OBJECTIVES, specs
from cspnas.run_format import Run
from cspnas.units import format_count

STAGE_COLORS = {"csp": "#1f77b4", "fusion_first": "#ff7f0e", "fusion_last": "#2ca02c", "plain": "#7f7f7f",
                "mixed": "#9467bd"}
FRONT_COLOR, KNEE_COLOR, TRIAL_COLOR, INFEASIBLE_COLOR = "#d62728", "#ffbf00", "#9bb1c8", "#444444"
LAYOUT = dict(template="plotly_white", height=460, margin=dict(l=60, r=30, t=60, b=50), hovermode="closest")


@dataclass(frozen=True, eq=False)
class Points:
    """The trials of a run split the way every plot shows them."""

    complete: pd.DataFrame  # complete and feasible, with an accuracy (front members included)
    front: pd.DataFrame  # the rows of `complete` on the Pareto front, with a bool 'knee'
    infeasible: pd.DataFrame  # violated a constraint; accuracy may be missing (not trained)


def split_points(run: Run) -> Points:
    t = run.trials.copy()
    t["hover"] = [_hover(r) for r in t.to_dict(orient="records")]
    done = (t["state"] == "complete") & t["accuracy"].notna()
    infeasible = (t["state"] == "infeasible") | ((t["state"] == "complete") & ~t["feasible"])
    complete = t[done & ~infeasible]
    knee = dict(zip(run.front["trial"], run.front["knee"], strict=True))
    front = complete[complete["trial"].isin(knee)].copy()
    front["knee"] = front["trial"].map(knee).astype(bool)
    return Points(complete=complete, front=front, infeasible=t[infeasible])


def _hover(r: dict) -> str:
    acc = "not trained" if pd.isna(r["accuracy"]) else f"accuracy {OBJECTIVES['accuracy'].cell(r)}"
    measured = [f"{s.title} {s.cell(r)}" for s in OBJECTIVES.values()
                if s.name != "accuracy" and pd.notna(r.get(s.column))]
    lines = [f"<b>trial {r['trial']}</b> ({r['state']})", html.escape(str(r["arch_summary"])), acc, *measured]
    if isinstance(r["violations"], str) and r["violations"].strip():
        lines.append(f"violates: {html.escape(r['violations'])}")
    return "<br>".join(lines)


def _scatter(df: pd.DataFrame, x: str, y: pd.Series | str, name: str, **marker) -> go.Scatter:
    return go.Scatter(x=df[x], y=df[y] if isinstance(y, str) else y, mode="markers", name=name,
                      text=df["hover"], hovertemplate="%{text}<extra></extra>", marker=marker)


def tradeoff_figure(run: Run, pts: Points, x: str) -> go.Figure:
    """Accuracy against another objective's column `x`: all trials, the front, the knee, infeasible
    ones at their cost, the objective's limit."""
    spec = BY_COLUMN[x]
    fig = go.Figure()
    fig.add_trace(_scatter(pts.complete, x, "accuracy", "complete trials", color=TRIAL_COLOR, size=8))
    front = pts.front.sort_values(x)
    finalists = "final_epochs" in run.front and run.front["final_epochs"].notna().any()
    fig.add_trace(_scatter(front, x, "accuracy", f"Pareto front ({len(run.objectives)} objectives)"
                           + (" of the finalists, at brief accuracy (final: see Finalists)" if finalists else ""),
                           color=FRONT_COLOR, size=11, line=dict(color="white", width=1)))
    knee = front[front["knee"]]
    fig.add_trace(_scatter(knee, x, "accuracy", "knee", color=KNEE_COLOR, size=18, symbol="star",
                           line=dict(color="black", width=1)))
    if len(pts.infeasible):
        # untrained infeasible trials have no accuracy: show them on the floor at their cost
        y = pts.infeasible["accuracy"].fillna(0.0)
        fig.add_trace(_scatter(pts.infeasible, x, y, "infeasible (untrained at 0)", color=INFEASIBLE_COLOR,
                               size=9, symbol="x"))
    limit = run.limits.get(spec.name)
    if limit is not None:
        # shapes take data values on a log axis but annotations take log10 values, hence two calls
        fig.add_vline(x=limit, line_dash="dash", line_color=FRONT_COLOR)
        fig.add_annotation(x=math.log10(limit) if spec.log else limit, xref="x", y=1.0, yref="y domain",
                           text=f"limit {spec.format(limit)}", showarrow=False, xanchor="right", yanchor="top",
                           font_color=FRONT_COLOR)
    fig.update_layout(title=f"accuracy vs {spec.label}", xaxis_title=spec.label, yaxis_title="validation accuracy",
                      **LAYOUT)
    fig.update_xaxes(type="log" if spec.log else "linear")
    fig.update_yaxes(tickformat=".0%")
    return fig


def scatter3d_figure(run: Run, pts: Points) -> go.Figure | None:
    """Accuracy and the run's two other objectives in 3-D; None unless the run has three objectives."""
    others = [s for s in specs(run.objectives) if s.name != "accuracy"]
    if len(others) != 2:
        return None
    xs, ys = others
    fig = go.Figure()
    for df, name, color, size in ((pts.complete, "complete trials", TRIAL_COLOR, 4),
                                  (pts.front, "Pareto front", FRONT_COLOR, 6)):
        fig.add_trace(go.Scatter3d(x=df[xs.column], y=df[ys.column], z=df["accuracy"], mode="markers", name=name,
                                   text=df["hover"], hovertemplate="%{text}<extra></extra>",
                                   marker=dict(color=color, size=size)))
    fig.update_layout(title=f"accuracy, {xs.title} and {ys.title} (drag to rotate)", scene=dict(
        xaxis=dict(title=xs.label, type="log" if xs.log else "linear"),
        yaxis=dict(title=ys.label, type="log" if ys.log else "linear"),
        zaxis=dict(title="accuracy", tickformat=".0%"), aspectmode="cube", camera=dict(eye=dict(x=1.5, y=1.5, z=0.8))),
        **{**LAYOUT, "height": 640, "margin": dict(l=0, r=0, t=60, b=0)})
    return fig


def hypervolume_figure(run: Run) -> go.Figure | None:
    hv = run.trials[["trial", "hypervolume"]].dropna().sort_values("trial")
    if hv.empty:
        return None
    fig = go.Figure(go.Scatter(x=hv["trial"], y=hv["hypervolume"], mode="lines+markers", line_shape="hv",
                               name="hypervolume", hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(title="front hypervolume after each completed trial (fixed reference point)",
                      xaxis_title="trial", yaxis_title="normalized hypervolume", **LAYOUT)
    return fig


def knobs_figure(run: Run, pts: Points) -> go.Figure | None:
    """Parallel coordinates of the sampled knobs and the objectives, coloured by accuracy."""
    knobs = run.knob_columns
    df = pts.complete
    if not knobs or len(df) < 1:
        return None
    dims = [_dimension(c[2:], df[c]) for c in knobs]
    ordered = sorted(specs(run.objectives), key=lambda s: s.name == "accuracy")  # accuracy last, by the colour bar
    dims += [dict(label=s.label, values=df[s.column], tickformat=s.tickformat) for s in ordered]
    # slanted labels: a real space has 20+ knobs, whose names would overlap when level
    fig = go.Figure(go.Parcoords(dimensions=dims, labelangle=-30 if len(dims) > 8 else 0, labelside="top",
                                 line=dict(color=df["accuracy"], colorscale="Viridis", showscale=True,
                                           cmin=float(df["accuracy"].min()) - 0.005,  # never an empty range
                                           cmax=float(df["accuracy"].max()) + 0.005,
                                           colorbar=dict(title="acc", tickformat=".1%"))))
    fig.update_layout(title="design knobs of the complete trials (drag along an axis to filter)",
                      **{**LAYOUT, "height": 520, "margin": dict(l=90, r=70, t=150 if len(dims) > 8 else 110, b=40)})
    return fig


def _dimension(label: str, col: pd.Series) -> dict:
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if not numeric:
        # categories as codes with their names as tick labels ("n/a" where a knob was not sampled)
        names = col.map(lambda v: "n/a" if pd.isna(v) else str(v))
        cats = sorted(names.unique(), key=lambda s: (s == "n/a", s))
        code = {c: i for i, c in enumerate(cats)}
        return dict(label=label, values=names.map(code), tickvals=list(range(len(cats))), ticktext=cats,
                    range=[-0.5, len(cats) - 0.5] if len(cats) == 1 else [0, len(cats) - 1])
    present = sorted(col.dropna().unique())
    if not present:
        return dict(label=label, values=[0] * len(col), tickvals=[0], ticktext=["n/a"])
    lo, hi = float(present[0]), float(present[-1])
    # a knob with a few choices (depths, widths, ratios) shows exactly those; a continuous one 4 ticks
    ticks = [float(v) for v in present] if len(present) <= 12 else list(np.linspace(lo, hi, 4))
    span = (hi - lo) or max(abs(lo), 1.0)
    values, text = col, [f"{t:.3g}" for t in ticks]
    if col.isna().any():
        # a conditional knob (e.g. no split ratio for plain stages): park missing values below the range
        sentinel = lo - 0.25 * span
        values, ticks, text = col.fillna(sentinel), [sentinel] + ticks, ["n/a"] + text
    low = min(ticks)
    return dict(label=label, values=values, tickvals=ticks, ticktext=text,
                range=[low - 0.05 * span, hi + 0.05 * span])


def importance_figure(values: dict[str, float], trials: int) -> go.Figure:
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>", marker_color="#1f77b4"))
    caveat = "; few trials, so only indicative" if trials < 20 else ""
    fig.update_layout(title=f"knob importance for accuracy (fANOVA over {trials} completed trials{caveat})",
                      xaxis_title="share of accuracy variance", **{**LAYOUT, "height": max(260, 60 + 28 * len(items))})
    return fig


def stage_label(arch_json: str) -> tuple[str, float]:
    """(stage type shared by all stages or 'mixed', mean split ratio of the split stages or NaN)."""
    try:
        stages = json.loads(arch_json)["stages"]
    except (TypeError, ValueError, KeyError):
        return "mixed", float("nan")
    types = {s.get("stage_type", "csp") for s in stages}
    ratios = [float(s.get("split_ratio", 0.5)) for s in stages if s.get("stage_type", "csp") != "plain"]
    return (types.pop() if len(types) == 1 else "mixed"), (float(np.mean(ratios)) if ratios else float("nan"))


def csp_figure(pts: Points) -> go.Figure | None:
    """Does cross-stage partial splitting pay off? Accuracy vs MACs per stage type, and the best per cost bin."""
    df = pts.complete.copy()
    if df.empty:
        return None
    labels = [stage_label(a) for a in df["arch_json"]]
    df["stage_kind"] = [k for k, _ in labels]
    df["split"] = [r for _, r in labels]
    # matched cost: quantile bins of MACs, about three trials or more per bin
    n_bins = max(1, min(4, len(df) // 3))
    df["bin"] = pd.qcut(np.log10(df["macs"].astype(float)), n_bins, duplicates="drop") if n_bins > 1 else 0
    bins = sorted(df["bin"].unique(), key=lambda b: getattr(b, "left", b))
    bin_name = {b: _bin_label(df[df["bin"] == b]["macs"]) for b in bins}

    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=("accuracy vs MACs (size = mean split ratio; square = no split)",
                                        "best accuracy at matched cost (MACs bins)"))
    for kind in [k for k in STAGE_COLORS if k in set(df["stage_kind"])]:
        sub = df[df["stage_kind"] == kind]
        size = 8 + 24 * sub["split"].fillna(0.25)
        fig.add_trace(go.Scatter(x=sub["macs"], y=sub["accuracy"], mode="markers", name=kind, legendgroup=kind,
                                 text=sub["hover"] + "<br>mean split ratio " + sub["split"].map(
                                     lambda v: "-" if pd.isna(v) else f"{v:.2f}"),
                                 hovertemplate="%{text}<extra></extra>",
                                 marker=dict(color=STAGE_COLORS[kind], size=size, opacity=0.8,
                                             symbol=["square" if pd.isna(v) else "circle" for v in sub["split"]],
                                             line=dict(color="white", width=1))), row=1, col=1)
        # dots, not bars: accuracy differences of a point or two vanish on a bar axis that starts at 0
        best = sub.groupby("bin", observed=True)["accuracy"].max()
        fig.add_trace(go.Scatter(x=[bin_name[b] for b in best.index], y=best.values, name=kind, legendgroup=kind,
                                 mode="markers", showlegend=False,
                                 marker=dict(color=STAGE_COLORS[kind], size=14, symbol="diamond"),
                                 hovertemplate=f"{kind}<br>%{{x}}: best %{{y:.2%}}<extra></extra>"), row=1, col=2)
    log_macs = np.log10(df["macs"].astype(float))
    fig.update_xaxes(type="log", title_text="MACs", row=1, col=1,
                     range=[log_macs.min() - 0.05, log_macs.max() + 0.05])  # room for the largest markers
    fig.update_xaxes(categoryorder="array", categoryarray=[bin_name[b] for b in bins], title_text="MACs bin",
                     row=1, col=2)
    # one explicit accuracy range for both panels, so equal heights mean equal accuracy
    lo, hi = float(df["accuracy"].min()), float(df["accuracy"].max())
    pad = max(0.005, 0.1 * (hi - lo))
    fig.update_yaxes(tickformat=".1%", range=[lo - pad, hi + pad])
    fig.update_yaxes(title_text="validation accuracy", row=1, col=1)
    fig.update_layout(title="the CSP question: does splitting the stage pay off at the same cost?",
                      scattermode="group", legend_title_text="stage type (all stages)",
                      **{**LAYOUT, "height": 500, "margin": dict(l=60, r=30, t=100, b=50)})
    return fig


def _bin_label(macs: pd.Series) -> str:
    lo, hi = macs.min(), macs.max()
    return format_count(lo) if lo == hi else f"{format_count(lo)}–{format_count(hi)}"



def finalists_figure(run: Run, finalists: pd.DataFrame) -> go.Figure | None:
    """How each finalist moved: an arrow from its brief to its final validation accuracy, at its cost in the run's
    first cost objective; the finalists' front (on final accuracy) in red. `finalists`: report.finalists_table."""
    spec = next((s for s in specs(run.objectives) if s.name != "accuracy"), None)
    if finalists.empty or spec is None:
        return None
    cost = run.trials.set_index("trial")[spec.column]
    fig = go.Figure()
    for r in finalists.to_dict(orient="records"):
        x = float(cost.get(r["trial"]))
        x = math.log10(x) if spec.log else x  # annotations take log10 values on a log axis
        fig.add_annotation(x=x, y=r["final_val_acc"], ax=x, ay=r["brief_accuracy"], xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=2, arrowcolor="#888", text="")
    x = [float(cost.get(t)) for t in finalists["trial"]]
    text = [f"<b>trial {r['trial']}</b><br>{html.escape(str(r['arch_summary']))}<br>"
            f"brief {100 * r['brief_accuracy']:.2f}% -> final {100 * r['final_val_acc']:.2f}%<br>"
            f"rank {r['brief_rank']} -> {r['final_rank']}"
            for r in finalists.to_dict(orient="records")]
    fig.add_trace(go.Scatter(x=x, y=finalists["brief_accuracy"], mode="markers", name="brief accuracy", text=text,
                             hovertemplate="%{text}<extra></extra>", marker=dict(color=TRIAL_COLOR, size=9)))
    fig.add_trace(go.Scatter(x=x, y=finalists["final_val_acc"], mode="markers", name="final accuracy", text=text,
                             hovertemplate="%{text}<extra></extra>",
                             marker=dict(color=[FRONT_COLOR if on else INFEASIBLE_COLOR
                                                for on in finalists["on_front"]],
                                         size=12, symbol=["star" if k else "circle" for k in finalists["knee"]])))
    fig.update_layout(title="finalists: brief -> final validation accuracy (red: on the front, star: knee)",
                      xaxis_title=spec.label, yaxis_title="validation accuracy", **LAYOUT)
    fig.update_xaxes(type="log" if spec.log else "linear")
    fig.update_yaxes(tickformat=".0%")
    return fig
