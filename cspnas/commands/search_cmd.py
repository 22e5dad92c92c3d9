"""`cspnas search` and `cspnas space`: flags -> SearchSettings -> run_search -> summary."""
from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.table import Table



def register(sub) -> None:
    p = sub.add_parser("search", help="search the CSP space for the Pareto front of accuracy and costs "
                                      "(MACs, latency, memory, params)")
    p.add_argument("--budget", type=int, default=None, help="architectures to evaluate, infeasible ones included (default 50)")
    from cspnas.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, constraint_flags

    p.add_argument("--objectives", default=None, metavar="LIST",
                   help=f"comma list of {', '.join(OBJECTIVES)}, accuracy included "
                        f"(default {','.join(DEFAULT_OBJECTIVES)}); a resumed run keeps its own")
    for spec in constraint_flags():
        p.add_argument(spec.flag, default=None, metavar="LIMIT", help=spec.flag_help)
    p.add_argument("--space", default="default", help="bundled space name or YAML path (default: default)")
    p.add_argument("--dataset", default="digits", help="digits (bundled) | cifar10 | cifar100 | mnist | fashion-mnist | folder")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (folder: train/ and val/ or test/)")
    p.add_argument("--train-subset", type=int, default=None, help="train on a stratified subset of N images")
    p.add_argument("--epochs", type=int, default=5, help="brief-training epochs per candidate (default 5)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--sampler", default="tpe", help="tpe | nsga2 | random | qmc (default tpe)")
    p.add_argument("--scheduler", default="none", help="none | asha (early stopping; stopped trials never reach the front)")
    p.add_argument("--concurrency", type=int, default=2, help="trials trained at once (default 2)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=None, help="default min(1, GPUs / concurrency) when training on CUDA")
    p.add_argument("--device", default="auto", help="training device: auto | cpu | cuda (default auto)")
    p.add_argument("--train-precision", default="fp32",
                   help="fp32 | bf16 (autocast + channels_last) for training on CUDA (default fp32: faster for "
                        "brief trainings of small models, see README Performance)")
    p.add_argument("--latency-device", default="cpu", help="device latency is measured on (default cpu)")
    p.add_argument("--latency-batch-size", type=int, default=1)
    p.add_argument("--latency-threads", type=int, default=1)
    p.add_argument("--latency-dtype", default="float32", help="float32 | bfloat16 | float16 (cuda)")
    p.add_argument("--latency-input-size", type=int, default=None, help="default: the data set's image size")
    p.add_argument("--keep-weights", default="front", help="front | all | none (default front)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--name", default=None, help="run name (default search-<timestamp>); RUN = results-dir/name")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue an interrupted search to its budget")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. 10.0.0.5:6379)")
    p.add_argument("--no-dashboard", action="store_true", help="don't write RUN/dashboard.html")
    p.set_defaults(func=_search, search_parser=p)

    p = sub.add_parser("space", help="print a search space and its size")
    p.add_argument("space", metavar="FILE|NAME", help="YAML path or bundled name (default, edge)")
    p.set_defaults(func=_space)


def _settings(args):
    from cspnas.objectives import constraint_flags, parse_objectives
    from cspnas.search.settings import Constraints, SearchSettings

    def limit(spec):
        text = getattr(args, spec.flag.lstrip("-").replace("-", "_"))
        return spec.parse(text) if text else None

    constraints = Constraints(**{s.limit: limit(s) for s in constraint_flags()})
    name = args.name or dt.datetime.now().strftime("search-%Y%m%d-%H%M%S")
    return SearchSettings(
        name=name, results_dir=args.results_dir, space=args.space, dataset=args.dataset, data_dir=args.data_dir,
        train_subset=args.train_subset, budget=args.budget if args.budget is not None else 50, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, concurrency=args.concurrency, sampler=args.sampler,
        scheduler=args.scheduler, seed=args.seed, device=args.device, train_precision=args.train_precision,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, constraints=constraints, objectives=parse_objectives(args.objectives),
        latency_device=args.latency_device,
        latency_batch_size=args.latency_batch_size, latency_threads=args.latency_threads,
        latency_dtype=args.latency_dtype, latency_input_size=args.latency_input_size,
        keep_weights=args.keep_weights, address=args.address,
    )


def _search(args) -> int:
    settings = None if args.resume else _settings(args)  # bad flags fail here, before the slow imports
    from cspnas.search.runner import run_search

    if args.resume:
        outcome = run_search(resume=args.resume, given=_given(args), dashboard=not args.no_dashboard)
    else:
        outcome = run_search(settings, dashboard=not args.no_dashboard)
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
    search reads them); the run's config.yaml holds the rest. Flags left out are not "given",
    even where their default differs from the run."""
    import argparse

    from cspnas.search.resume import flag, flatten

    missing = object()
    explicit = argparse.Namespace(**{k: missing for k in vars(args)})  # no defaults are filled in
    args.search_parser.parse_known_args(args.search_parser.argv, explicit)
    flags = {"--" + k.replace("_", "-") for k, v in vars(explicit).items() if v is not missing}
    return {k: v for k, v in flatten(_settings(args).to_dict()).items() if flag(k) in flags}


def _print_summary(outcome) -> None:
    console = Console()
    trials, front = outcome.trials, outcome.front
    counts = trials["state"].value_counts().to_dict()
    from cspnas.results.report import shown_objectives

    table = Table(title=f"Pareto front ({len(front)} of {len(trials)} trials; hypervolume {outcome.hypervolume:.4f})")
    shown = shown_objectives(front)
    for col in ("trial", "architecture", *(s.header for s in shown), "knee"):
        table.add_column(col, justify="left" if col == "architecture" else "right", no_wrap=col != "architecture")
    for r in front.to_dict(orient="records"):
        table.add_row(str(r["trial"]), r["arch_summary"], *(s.cell(r) for s in shown), "*" if r["knee"] else "")
    console.print(table)
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
    console.print(table)
    if space.description:
        console.print(space.description)
    return 0
