"""`cspnas dashboard RUN`: write the run's self-contained HTML dashboard (and optionally open it)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="write RUN/dashboard.html: interactive plots of a search run")
    p.add_argument("run", metavar="RUN", help="run directory written by `cspnas search` (results/<name>)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--no-importance", action="store_true", help="skip the knob-importance fit (faster)")
    p.set_defaults(func=run_dashboard)


def run_dashboard(args) -> int:
    from cspnas.results.dashboard import write_dashboard

    path = write_dashboard(args.run, importance=not args.no_importance)
    print(f"wrote {path}")
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"no web browser found; open {path} yourself")
    return 0
