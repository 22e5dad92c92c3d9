"""Draw the committed experiment results (results/benchmarks/*.json) as small SVG charts.

    python experiments/plot_results.py                   # writes results/benchmarks/*.svg
    python experiments/plot_results.py --dir /tmp/smoke  # any folder holding the JSON files
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import REPO
from svg import chart


def proxy_fidelity(report: dict, out: Path) -> None:
    rows, r = report["rows"], report["result"]
    chart(out, {"architecture": [(row["brief_acc"], row["long_acc"]) for row in rows]}, lines=False,
          title=f"Proxy fidelity: Spearman {r['spearman_brief_vs_long']:.2f} ({len(rows)} archs)",
          xlabel=f"val. accuracy after {report['settings']['brief_epochs']} epochs (search proxy)",
          ylabel=f"val. accuracy after {report['settings']['long_epochs']} epochs")


def search_strategies(report: dict, out: Path) -> None:
    series = {f"{name} ({len(s['final_hv_per_seed'])} seeds)": list(enumerate(s["mean_curve"], start=1))
              for name, s in report["summary"].items()}
    chart(out, series, title="Hypervolume vs trials (mean over seeds)", xlabel="trials",
          ylabel="normalized hypervolume")


def csp_question(report: dict, out: Path) -> None:
    series: dict[str, list] = {}
    for t in report["table"]:
        family = t["variant"].split("@")[0]
        series.setdefault(family, []).append((t["macs"] / 1e6, t["acc_mean"]))
    chart(out, series, lines=False, title="CSP vs plain stages at matched depth and width",
          xlabel="MMACs", ylabel=f"val. accuracy (mean of {report['settings']['seeds']} seeds)")


def latency_quality(report: dict, out: Path) -> None:
    series = {}
    for name, cond in report["conditions"].items():
        pairs = [tuple(row[name]["median_ms"][:2]) for row in report["rows"] if name in row]
        if pairs:
            series[name] = pairs
    chart(out, series, lines=False, diagonal=True, title="Latency: two passes over the same architectures",
          xlabel="pass 1 median latency (ms)", ylabel="pass 2 median latency (ms)")


def multi_fidelity(report: dict, out: Path) -> None:
    series = {f"{name} ({len(s['final_hv_per_seed'])} seeds)": [tuple(p) for p in s["mean_curve_vs_baseline_compute"]]
              for name, s in report["summary"].items()}
    chart(out, series, title="Hypervolume vs training compute (mean over seeds)",
          xlabel="training seconds, share of fixed-epoch TPE's total (same seed)", ylabel="normalized hypervolume")


PLOTS = {"proxy_fidelity": proxy_fidelity, "search_strategies": search_strategies, "csp_question": csp_question,
         "latency_quality": latency_quality, "multi_fidelity": multi_fidelity}


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=REPO / "results" / "benchmarks")
    args = ap.parse_args(argv)
    written = []
    for name, plot in PLOTS.items():
        source = args.dir / f"{name}.json"
        if not source.is_file():
            continue
        report = json.loads(source.read_text())
        if not report.get("complete", True):
            print(f"{source}: incomplete run, not plotted")
            continue
        plot(report, source.with_suffix(".svg"))
        written.append(source.with_suffix(".svg"))
        print(f"wrote {source.with_suffix('.svg')}")
    return written


if __name__ == "__main__":
    main()
