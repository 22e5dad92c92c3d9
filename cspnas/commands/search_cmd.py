"""`cspnas search` and `cspnas space`: flags -> SearchSettings -> run_search -> summary."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from cspnas.commands.flags import add_setting, given
from cspnas.errors import CspnasError
from cspnas.tables import print_table

# flags that are SearchSettings fields of the same name (the rest are parsed below), in --help order:
# what and on which data, [the trials' training], how the search runs
_DATA_FLAGS = (("--budget", int), ("--screen-limit", int), ("--space", str), ("--dataset", str), ("--data-dir", str),
               ("--train-subset", int), ("--image-size", int))
_RUN_FLAGS = (("--sampler", str), ("--scheduler", str), ("--pareto-margin", float), ("--concurrency", int),
              ("--cpus-per-trial", float),
              ("--gpus-per-trial", float), ("--trials-per-gpu", int), ("--worker-trials", int), ("--device", str),
              ("--evaluator", str), ("--prefilter", str), ("--prefilter-warmup", int), ("--latency-backend", str),
              ("--latency-precision", str),
              ("--latency-device", str), ("--latency-batch-size", int), ("--latency-threads", int),
              ("--latency-statistic", str),
              ("--latency-dtype", str), ("--latency-input-size", int), ("--latency-model", str),
              ("--keep-weights", str), ("--finalists", int), ("--final-epochs", int), ("--seed", int),
              ("--accuracy-noise", float),
              ("--results-dir", str), ("--address", str), ("--latency-node", str))
_TRAIN_FLAGS = (("--epochs", int, "brief-training epochs per candidate"), ("--batch-size", int, None),
                ("--lr", float, None), ("--cuda-step", str, None))


def register(sub) -> None:
    from cspnas.objectives import constraint_flags
    from cspnas.search.settings import TRAIN_PRECISIONS, Constraints, SearchSettings, search_training

    p = sub.add_parser("search", help="search the CSP space for the Pareto front of accuracy and costs "
                                      "(MACs, latency, memory, params)")
    add_setting(p, "--objectives", SearchSettings, metavar="LIST")
    for spec in constraint_flags():  # a limit's flag is named by its objective (cspnas.objectives)
        add_setting(p, spec.flag, Constraints, spec.limit, metavar="LIMIT", help=spec.flag_help)
    for flag, kind in _DATA_FLAGS:
        add_setting(p, flag, SearchSettings, type=kind)
    training = search_training()
    for flag, kind, text in _TRAIN_FLAGS:
        add_setting(p, flag, training, type=kind, help=text)
    precision = next(k for k, v in TRAIN_PRECISIONS.items() if all(getattr(training, f) == x for f, x in v.items()))
    p.add_argument("--train-precision", default=None,
                   help=f"{' | '.join(TRAIN_PRECISIONS)}: bf16 is autocast + channels_last, for training on CUDA "
                        f"(default {precision}: faster for brief trainings of small models, see README Performance)")
    for flag, kind in _RUN_FLAGS:
        add_setting(p, flag, SearchSettings, type=kind)
    add_setting(p, "--confirm-latency", SearchSettings, action="store_true")
    p.add_argument("--name", default=None, help="run name (default search-<timestamp>); RUN = results-dir/name")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue an interrupted search to its budget")
    p.add_argument("--no-dashboard", action="store_true", help="don't write RUN/dashboard.html")
    p.set_defaults(func=_search)

    p = sub.add_parser("space", help="print a search space and its size")
    p.add_argument("space", metavar="FILE|NAME", help="YAML path or bundled name (default, edge)")
    p.set_defaults(func=_space)


def _limit(spec, text: str):
    """A limit flag's value, or one line that names the flag."""
    try:
        return spec.parse(text)
    except CspnasError as e:
        raise CspnasError(f"{spec.flag} {text}: {e}") from None


def _settings(args):
    from cspnas.objectives import constraint_flags
    from cspnas.search.settings import TRAIN_PRECISIONS, Constraints, SearchSettings, search_training

    constraints = Constraints(**{s.limit: _limit(s, getattr(args, s.limit)) for s in constraint_flags()
                                 if getattr(args, s.limit)})
    train = given(args, *(flag[2:].replace("-", "_") for flag, _, _ in _TRAIN_FLAGS))
    if args.train_precision is not None:
        if args.train_precision not in TRAIN_PRECISIONS:
            raise CspnasError(f"--train-precision must be one of {', '.join(TRAIN_PRECISIONS)}, "
                              f"got {args.train_precision!r}")
        train.update(TRAIN_PRECISIONS[args.train_precision])
    name = args.name or dt.datetime.now().strftime("search-%Y%m%d-%H%M%S")
    return SearchSettings(name=name, constraints=constraints, train=replace(search_training(), **train),
                          **given(args, "objectives", "confirm_latency",
                                  *(flag[2:].replace("-", "_") for flag, _ in _DATA_FLAGS + _RUN_FLAGS)))


def _search(args) -> int:
    settings = None if args.resume else _settings(args)  # bad flags fail here, before the slow imports
    from cspnas.search.runner import run_search

    if args.resume:
        outcome = run_search(resume=args.resume, given=_given(args), dashboard=not args.no_dashboard, estimate=True)
    else:
        outcome = run_search(settings, dashboard=not args.no_dashboard, estimate=True)
    _print_summary(outcome)
    if not args.no_dashboard:
        try:
            from cspnas.results.dashboard import write_dashboard
        except ImportError:
            write_dashboard = None
        if write_dashboard is not None:
            path = write_dashboard(outcome.run_dir)
            Console().print(f"dashboard: {path}")
    return 0


def _given(args) -> dict:
    """With --resume: the settings the user gave flags for (flattened keys -> values, read as a new
    search reads them); the run's config.yaml holds the rest. A flag's dest is its setting's leaf
    name (argparse defaults are None, so a flag left out is not "given")."""
    from cspnas.search.resume import flatten
    from cspnas.search.settings import TRAIN_PRECISIONS

    leaves = {k for k, v in vars(args).items() if v is not None}
    if args.train_precision is not None:
        leaves |= set(TRAIN_PRECISIONS[args.train_precision])
    return {k: v for k, v in flatten(_settings(args).to_dict()).items() if k.rsplit(".", 1)[-1] in leaves}


def _print_summary(outcome) -> None:
    console = Console()
    trials, front = outcome.trials, outcome.front
    counts = trials["state"].value_counts().to_dict()
    from cspnas.results.report import shown_objectives

    on_final = "final_epochs" in front and front["final_epochs"].notna().any()  # the finalists' front
    table = Table(title=f"Pareto front ({len(front)} of {len(trials)} trials"
                        + (", the finalists on their final accuracy" if on_final else "")
                        + f"; hypervolume {outcome.hypervolume:.4f})")
    shown = shown_objectives(front)
    for col in ("trial", "architecture", *(s.header for s in shown), "knee"):
        table.add_column(col, justify="left" if col == "architecture" else "right", no_wrap=col != "architecture")
    for r in front.to_dict(orient="records"):
        table.add_row(str(r["trial"]), r["arch_summary"], *(s.cell(r) for s in shown), "*" if r["knee"] else "")
    print_table(table, console)
    console.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; wall {outcome.wall_seconds:.0f} s")
    console.print(f"run directory: {outcome.run_dir}")


def _space(args) -> int:
    from cspnas.space.searchspace import load_space

    space = load_space(args.space)
    console = Console()
    table = Table(title=f"search space '{space.name}': {space.size():,} architectures (~10^{len(str(space.size())) - 1})")
    table.add_column("knob")
    table.add_column("values")
    for knob, values in space.describe():
        table.add_row(knob, values)
    print_table(table, console)
    if space.description:
        console.print(space.description)
    return 0
