"""How long the driver is blocked per candidate's cost (issue 16 item 3), with latency timed in the
driver (cspnas <= 0.2: CostMeter without a measurer) against timed by the search's measuring Ray
actor (cspnas.search.measurer), and whether the two agree on the latencies.

The same architectures (spread over the default space, digits 1x8x8, the search's default latency
settings) are costed both ways, alternating per candidate, each with an empty cache, nothing
training (so nothing is gated). The driver is blocked for the whole CostMeter.measure call either
way: that call runs inside Tune's searcher, i.e. Tune's event loop.

    python experiments/bench_measurer.py            # writes results/benchmarks/measurer_overhead.json
    python experiments/bench_measurer.py --smoke    # 3 candidates (tests/test_experiments_smoke.py, slow tier)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, spread_sample, write_json  # noqa: E402

from cspnas.cost import LatencySettings  # noqa: E402
from cspnas.search.costs import CostMeter  # noqa: E402
from cspnas.search.measurer import reserved_cores, start_measurer  # noqa: E402
from cspnas.search.ray_session import start_ray  # noqa: E402
from cspnas.search.settings import SearchSettings  # noqa: E402
from cspnas.space.searchspace import load_space  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default="results/benchmarks/measurer_overhead.json")
    args = parser.parse_args()
    n = 3 if args.smoke else args.archs
    settings = SearchSettings(name="bench")
    latency = LatencySettings(in_chs=1, input_size=8, min_run_time_s=settings.latency_min_run_time_s)
    archs = spread_sample(load_space("default"), n, in_chs=1, num_classes=10, input_size=8,
                          pool=40 if args.smoke else 400)
    cores = reserved_cores(settings.latency_threads)
    start_ray(settings, reserved=len(cores))
    t_start = time.perf_counter()
    actor, fp = start_measurer(latency, Path(tempfile.mkdtemp()), cores=cores, latency_node=None)
    start_s = time.perf_counter() - t_start
    rows = []
    for arch in archs:
        row = {}
        for way, measurer in (("driver", None), ("actor", actor)):
            meter = CostMeter(latency, None, 8, measurer=measurer)
            t0 = time.perf_counter()
            cost = meter.measure(arch)
            row[f"{way}_blocked_s"] = time.perf_counter() - t0
            row[f"{way}_latency_ms"] = cost["latency_ms"]
        rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratios = [r["actor_latency_ms"] / r["driver_latency_ms"] for r in rows]
    report = {
        "what": "driver-blocked seconds per candidate cost (build, params, MACs, latency, memory), latency timed "
                "in the driver vs by the measuring actor; same archs, alternating",
        "command": "python experiments/bench_measurer.py" + (" --smoke" if args.smoke else ""),
        "archs": len(rows), "reserved_cores": cores, "measurer": fp, "measurer_start_s": start_s,
        "median_blocked_s": {"driver": med["driver_blocked_s"], "actor": med["actor_blocked_s"]},
        "median_actor_over_driver_blocked": statistics.median(
            r["actor_blocked_s"] / r["driver_blocked_s"] for r in rows),
        "median_latency_ratio_actor_over_driver": statistics.median(ratios),
        "machine": machine(), "rows": rows,
    }
    write_json(Path(args.out), report)
    print(f"{len(rows)} archs: driver blocked median {med['driver_blocked_s']:.3f} s (latency in the driver) vs "
          f"{med['actor_blocked_s']:.3f} s (measuring actor); latency actor/driver median "
          f"{report['median_latency_ratio_actor_over_driver']:.3f}; actor start {start_s:.1f} s")


if __name__ == "__main__":
    main()
