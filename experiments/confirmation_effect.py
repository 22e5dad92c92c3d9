"""What the end-of-search confirmation pass changes: each run's front on the latencies recorded when its
candidates were screened (one measurement each) against its front on the confirmed latencies
(front members re-timed in 5 interleaved passes, the search's last step). No timing here: it reads
finished runs.

Per run: front size before and after, members that joined and left, how far the confirmed latencies
of the re-timed trials are from their first measurement (median and max |confirmed / recorded - 1|),
and members marked marginal (margin to --target-latency inside the noise). The brief front is compared
(a run with finalists puts its front on final accuracy afterwards; that is another question).

    python experiments/confirmation_effect.py                 # the multi-fidelity and headline runs in .cache
    python experiments/confirmation_effect.py RUN [RUN ...]   # any finished runs
    # -> results/benchmarks/confirmation_effect.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import CACHE, REPO, machine, write_json

DEFAULT_RUNS = ("experiments/multi_fidelity/*", "headline-headline/*")


def effect(run_dir: Path) -> dict:
    from cspnas.objectives import settled
    from cspnas.pareto import compute_front
    from cspnas.run_format import brief_pareto_frame, front_candidates, load_run, objectives_of

    run = load_run(run_dir)
    cand = front_candidates(run.trials)
    objectives = objectives_of(run.config)
    before = set(compute_front(cand, objectives).table["trial"]) if len(cand) else set()
    after_table, _ = brief_pareto_frame(run.trials, run.config)
    after = set(after_table["trial"])
    confirmed = settled(cand)
    moved = [abs(c / r - 1) for r, c in zip(cand["latency_ms"], cand.get("latency_confirmed_ms", []))
             if c == c and r > 0]  # c == c: not NaN
    latency = run.config.get("latency") or {}
    return {"run": str(run_dir.relative_to(CACHE) if run_dir.is_relative_to(CACHE) else run_dir),
            "statistic": latency.get("statistic", "median"), "backend": latency.get("backend", "torch"),
            "candidates": len(cand), "before": len(before), "after": len(after),
            "joined": len(after - before), "left": len(before - after), "kept": len(before & after),
            "confirmed_trials": int(confirmed["confirmed"].sum()) if len(cand) else 0,
            "confirmed_change_median": statistics.median(moved) if moved else None,
            "confirmed_change_max": max(moved) if moved else None,
            "marginal": int(after_table["marginal"].fillna(False).astype(bool).sum()) if len(after_table) else 0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "confirmation_effect.json")
    args = ap.parse_args(argv)
    runs = args.runs or sorted(p for pattern in DEFAULT_RUNS for p in CACHE.glob(pattern) if (p / "study.db").is_file())
    if not runs:
        raise SystemExit("no finished runs found; pass RUN folders (or run experiments/multi_fidelity.py first)")
    t0 = time.monotonic()
    rows = [effect(r) for r in runs]
    total = {k: sum(r[k] for r in rows) for k in ("before", "after", "joined", "left", "kept", "confirmed_trials")}
    changes = [r["confirmed_change_median"] for r in rows if r["confirmed_change_median"] is not None]
    report = {"runs": len(rows), "total": total,
              "share_of_members_changed": (total["joined"] + total["left"]) / max(total["before"], 1),
              "median_of_runs_confirmed_change": statistics.median(changes) if changes else None,
              "rows": rows, "machine": machine(), "wall_s": round(time.monotonic() - t0, 1)}
    write_json(args.out, report)
    for r in rows:
        print(f"{r['run']:40s} {r['statistic']:6s} front {r['before']:2d} -> {r['after']:2d} (+{r['joined']} "
              f"-{r['left']}), re-timed {r['confirmed_trials']}, change median {r['confirmed_change_median'] or 0:.1%}"
              f" max {r['confirmed_change_max'] or 0:.1%}, marginal {r['marginal']}")
    print(json.dumps({k: report[k] for k in ("runs", "total", "share_of_members_changed",
                                             "median_of_runs_confirmed_change")}))
    return report


if __name__ == "__main__":
    main()
