"""`cspnas report RUN`: the Pareto front and the totals of a search run."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("report", help="Pareto front and totals of a search run")
    p.add_argument("run", metavar="RUN", help="run directory written by `cspnas search` (results/<name>)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object (totals + front)")
    fmt.add_argument("--csv", action="store_true", help="print the front as CSV")
    from cspnas.objectives import OBJECTIVES

    p.add_argument("--sort", default="accuracy", choices=list(OBJECTIVES),
                   help="order of the front rows, best first (default accuracy)")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from cspnas.results.report import front_csv, print_report, report_dict
    from cspnas.run_format import load_run

    run = load_run(args.run)
    if args.json:
        print(json.dumps(report_dict(run, args.sort), indent=2))
    elif args.csv:
        sys.stdout.write(front_csv(run, args.sort))
    else:
        print_report(run, args.sort)
    return 0
