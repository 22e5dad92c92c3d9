"""`cspnas search` and `cspnas space`: flags -> SearchSettings -> run_search -> summary."""
from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.table import Table

from cspnas.tables import print_table



def register(sub) -> None:
    p = sub.add_parser("search", help="search the CSP space for the accuracy / MACs / latency Pareto front")
    p.add_argument("--budget", type=int, default=None, help="architectures to evaluate, infeasible ones included (default 50)")
    p.add_argument("--target-latency", default=None, metavar="T", help="hard latency limit, e.g. 10ms, 500us, 0.01s")
    p.add_argument("--max-macs", default=None, metavar="N", help="hard multiply-add limit, e.g. 300M")
    p.add_argument("--max-params", default=None, metavar="N", help="hard parameter limit, e.g. 5M")
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
    p.set_defaults(func=_search)

    p = sub.add_parser("space", help="print a search space and its size")
    p.add_argument("space", metavar="FILE|NAME", help="YAML path or bundled name (default, edge)")
    p.set_defaults(func=_space)


def _settings(args):
    from cspnas.search.settings import Constraints, SearchSettings
    from cspnas.units import parse_count, parse_duration_ms

    constraints = Constraints(
        max_latency_ms=parse_duration_ms(args.target_latency) if args.target_latency else None,
        max_macs=int(parse_count(args.max_macs)) if args.max_macs else None,
        max_params=int(parse_count(args.max_params)) if args.max_params else None,
    )
    name = args.name or dt.datetime.now().strftime("search-%Y%m%d-%H%M%S")
    return SearchSettings(
        name=name, results_dir=args.results_dir, space=args.space, dataset=args.dataset, data_dir=args.data_dir,
        train_subset=args.train_subset, budget=args.budget if args.budget is not None else 50, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, concurrency=args.concurrency, sampler=args.sampler,
        scheduler=args.scheduler, seed=args.seed, device=args.device, train_precision=args.train_precision,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, constraints=constraints, latency_device=args.latency_device,
        latency_batch_size=args.latency_batch_size, latency_threads=args.latency_threads,
        latency_dtype=args.latency_dtype, latency_input_size=args.latency_input_size,
        keep_weights=args.keep_weights, address=args.address,
    )


def _search(args) -> int:
    settings = None if args.resume else _settings(args)  # bad flags fail here, before the slow imports
    from cspnas.search.runner import run_search

    if args.resume:
        outcome = run_search(resume=args.resume, budget=args.budget, dashboard=not args.no_dashboard)
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


def _print_summary(outcome) -> None:
    console = Console()
    trials, front = outcome.trials, outcome.front
    counts = trials["state"].value_counts().to_dict()
    table = Table(title=f"Pareto front ({len(front)} of {len(trials)} trials; hypervolume {outcome.hypervolume:.4f})")
    for col in ("trial", "architecture", "accuracy", "MACs", "params", "latency ms", "knee"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for _, r in front.iterrows():
        table.add_row(str(r["trial"]), r["arch_summary"], f"{r['accuracy']:.4f}", f"{int(r['macs']):,}",
                      f"{int(r['params']):,}", f"{r['latency_ms']:.3f} ± {r['latency_iqr_ms']:.3f}",
                      "*" if r["knee"] else "")
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
