"""Tiny dependency-free SVG charts for committed experiment results (a few KB, render on GitHub).

Plotly HTML would need either its 3.5 MB library inline or a CDN at view time; a results file
should be small and self-contained, so the experiments draw plain SVG lines and points.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22")
W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 360, 60, 130, 30, 45


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) inside [lo, hi]."""
    import math

    raw = (hi - lo) / (n - 1) or 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def chart(path: Path, series: dict[str, list[tuple[float, ...]]], *, title: str, xlabel: str, ylabel: str,
          lines: bool = True, diagonal: bool = False, points: frozenset = frozenset(),
          vlines: tuple = ()) -> None:
    """One SVG with a line (or point) series per legend entry. A point (x, y, e) also gets an error bar y +- e;
    series named in ``points`` are drawn as points even when ``lines``; ``vlines``: dashed verticals at these x."""
    pts = [p for s in series.values() for p in s]
    err = [p[2] if len(p) > 2 else 0.0 for p in pts]
    xlo, xhi = min(p[0] for p in pts), max(p[0] for p in pts)
    ylo, yhi = min(p[1] - e for p, e in zip(pts, err)), max(p[1] + e for p, e in zip(pts, err))
    if diagonal:  # same range on both axes, so y = x is the diagonal
        xlo = ylo = min(xlo, ylo)
        xhi = yhi = max(xhi, yhi)
    pad_x, pad_y = 0.04 * ((xhi - xlo) or 1.0), 0.04 * ((yhi - ylo) or 1.0)  # keep edge points inside
    xlo, xhi, ylo, yhi = xlo - pad_x, xhi + pad_x, ylo - pad_y, yhi + pad_y
    sx, sy = _scale(xlo, xhi, LEFT, W - RIGHT), _scale(ylo, yhi, H - BOTTOM, TOP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2 - RIGHT / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
           f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
           f'{escape(ylabel)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" '
           f'stroke="#888"/>']
    for v in _ticks(xlo, xhi):
        out.append(f'<text x="{sx(v):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{v:.3g}</text>')
    for v in _ticks(ylo, yhi):
        out.append(f'<text x="{LEFT - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eee"/>')
    if diagonal:
        out.append(f'<line x1="{sx(xlo):.1f}" y1="{sy(ylo):.1f}" x2="{sx(xhi):.1f}" y2="{sy(yhi):.1f}" '
                   'stroke="#bbb" stroke-dasharray="4 3"/>')
    for v in vlines:
        out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#bbb" '
                   'stroke-dasharray="2 3"/>')
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        if lines and name not in points:
            d = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in s)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        else:
            out += [f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[1]):.1f}" r="3.5" fill="{color}"/>' for p in s]
        out += [f'<line x1="{sx(p[0]):.1f}" x2="{sx(p[0]):.1f}" y1="{sy(p[1] - p[2]):.1f}" y2="{sy(p[1] + p[2]):.1f}" '
                f'stroke="{color}" stroke-width="1.5"/>' for p in s if len(p) > 2 and p[2] > 0]
        ly = TOP + 14 + 16 * i
        out.append(f'<rect x="{W - RIGHT + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{W - RIGHT + 24}" y="{ly + 1}">{escape(name)}</text>')
    out.append("</svg>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
