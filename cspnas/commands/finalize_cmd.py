"""`cspnas finalize RUN [--finalists K] [--final-epochs N]`: retrain a run's finalists (cspnas.search.finalists)."""
from __future__ import annotations

from cspnas.commands.flags import add_setting


def register(sub) -> None:
    from cspnas.search.finalists import DEFAULT_FINALISTS
    from cspnas.search.settings import SearchSettings

    p = sub.add_parser("finalize", help="retrain K Pareto-front members of a finished run for N epochs each (the knee "
                                        "first, then spread along the front) and put the front on their final "
                                        "accuracy")
    p.add_argument("run", metavar="RUN", help="the run directory a search wrote (results/<name>)")
    p.add_argument("--finalists", type=int, default=None, metavar="K",
                   help=f"how many front members (default: the run's --finalists, else {DEFAULT_FINALISTS}); more "
                        "than the front retrains the whole front")
    add_setting(p, "--final-epochs", SearchSettings, type=int, metavar="N",
                help="training epochs of each finalist (default: what the run's finalists were trained for, else "
                     "the run's --final-epochs)")
    p.set_defaults(func=_finalize)


def _finalize(args) -> int:
    from cspnas.search.finalists import finalize

    from cspnas.run_format import load_run

    trained = finalize(args.run, args.finalists, args.final_epochs)
    finalists = load_run(args.run).finalists
    if len(finalists):
        print(f"finalize: {len(trained)} finalist(s) trained now, {len(finalists)} in all; the front (pareto.csv) is "
              f"on their final accuracy, the brief one in brief_pareto.csv; see `cspnas report {args.run}`")
    return 0
