"""Run a search end to end: run directory, Ray, Optuna study, Tune, tables, summary.

The run directory holds config.yaml (the settings + derived values such as objective
references), study.db (Optuna, the single source of truth), trials.csv / pareto.csv
(derived from the study after every trial), weights/ and dashboard.html.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from cspnas.cost import LatencySettings
from cspnas.data import load_dataset
from cspnas.errors import CspnasError
from cspnas.search.costs import CostMeter
from cspnas.search.faults import crash_point
from cspnas.search.gate import MeasureGate
from cspnas.search.preflight import check_constraints_reachable
from cspnas.search.progress import Progress, Status
from cspnas.search.ray_session import start_ray
from cspnas.search.records import write_tables
from cspnas.search.settings import SearchSettings
from cspnas.search.store import (STUDY_NAME, create_run_dir, new_config, open_storage, prepare_run, read_config,
                                 write_yaml_atomic)
from cspnas.space import ArchConfig, StageConfig, StemConfig
from cspnas.space.searchspace import IntRange, SearchSpace, load_space, parse_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    run_dir: Path
    trials: Any  # pandas DataFrame
    front: Any
    hypervolume: float
    wall_seconds: float


# -- sampler, data, references ---------------------------------------------------------------------

def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _largest_arch(space: SearchSpace, in_chs: int, num_classes: int) -> ArchConfig:
    """A big member of the space (max widths and depths, csp stages), to scale the objectives."""
    def top(v):
        return v.max if isinstance(v, IntRange) else max(v) if isinstance(v, tuple) else v

    stages = tuple(StageConfig(depth=top(s["depth"]), out_chs=top(s["out_chs"]), stride=top(s.get("stride", 2)),
                               stage_type="csp", block_type="dark", split_ratio=0.75, bottle_ratio=1.0)
                   for s in space.stages)
    stem = StemConfig(out_chs=(top(space.stem.get("out_chs", 32)),), stride=top(space.stem.get("stride", 1)))
    return ArchConfig(stem=stem, stages=stages, in_chs=in_chs, num_classes=num_classes)


def _references(settings: SearchSettings, meter: CostMeter, space: SearchSpace, in_chs: int,
                num_classes: int) -> tuple[float, float]:
    """Fixed hypervolume references: the constraint when set, else 2x the cost of a large candidate."""
    c = settings.constraints
    if c.max_macs is not None and c.max_latency_ms is not None:
        return float(c.max_macs), float(c.max_latency_ms)
    big = meter.measure(_largest_arch(space, in_chs, num_classes))
    macs_ref = float(c.max_macs) if c.max_macs is not None else 2.0 * big["macs"]
    lat_ref = float(c.max_latency_ms) if c.max_latency_ms is not None else 2.0 * big["latency_ms"]
    return macs_ref, lat_ref


def cluster_train_device(name: str, cluster_gpus: float) -> str:
    """The training device on a joined cluster, judged by the cluster's GPUs, not the driver's:
    a CPU-only head node with GPU workers must still train on CUDA."""
    if name == "auto":
        return "cuda" if cluster_gpus > 0 else "cpu"
    if name.startswith("cuda") and cluster_gpus <= 0:
        raise CspnasError(f"--device {name}: the Ray cluster has no GPUs; use --device cpu or add GPU nodes")
    if name.startswith("cuda:"):  # Ray assigns each trial its GPU(s); an index would bypass that
        raise CspnasError(f"--device {name}: on a cluster Ray picks each trial's GPU; use --device cuda")
    if name not in ("cpu", "cuda"):
        raise CspnasError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'auto'")
    return name


def default_gpus_per_trial(total_gpus: float, concurrency: int) -> float:
    """GPU share of one trial when --gpus-per-trial is not given: spread `concurrency` trials over
    all GPUs, sharing a GPU only when there are more trials than GPUs (never more than 1)."""
    return min(1.0, max(total_gpus, 1.0) / concurrency)


def _resolve_train_device(settings: SearchSettings) -> str:
    if settings.address:  # Ray is already joined (run_search joins before anything else)
        import ray

        return cluster_train_device(settings.device, float(ray.cluster_resources().get("GPU", 0)))
    from cspnas.train import resolve_device

    return str(resolve_device(settings.device))


# -- the search -------------------------------------------------------------------------------------

def run_search(settings: SearchSettings | None = None, *, resume: str | Path | None = None,
               budget: int | None = None, live: bool | None = None, preflight: bool = True,
               dashboard: bool = True, estimate: bool = False) -> SearchOutcome:
    """Search (or resume RUN) to the budget. `preflight=False` skips the check that the hard limits
    can be met at all (see preflight.check_constraints_reachable), e.g. to benchmark an all-infeasible search.
    `dashboard=False` (the CLI's --no-dashboard) never writes RUN/dashboard.html, not even while searching.
    `estimate=True` (the CLI's) prints what the search will roughly cost before it starts."""
    t0 = time.monotonic()
    if resume is not None:
        run_dir = Path(resume)
        config = read_config(run_dir)
        settings = SearchSettings.from_dict(config["settings"])
        if budget is not None:
            settings = replace(settings, budget=budget)
            config["settings"]["budget"] = budget
        space = parse_space(config["space_yaml"], origin=f"{run_dir}/config.yaml:space_yaml")
        if not (run_dir / "study.db").is_file():
            raise CspnasError(f"{run_dir}: study.db is missing, nothing to resume; start a new run with another --name")
    else:
        assert settings is not None
        space = load_space(settings.space)
        run_dir = prepare_run(settings)
        config = None
    if settings.address:
        start_ray(settings)  # join before any file exists: a wrong address or token leaves no run behind

    data = load_dataset(settings.dataset, settings.data_dir, val_fraction=settings.val_fraction,
                        split_seed=settings.seed, train_subset=settings.train_subset, image_size=settings.image_size)
    train_device = _resolve_train_device(settings)
    input_size = settings.latency_input_size or data.input_size
    latency = LatencySettings(device=settings.latency_device, batch_size=settings.latency_batch_size,
                              in_chs=data.in_chs, input_size=input_size, threads=settings.latency_threads,
                              dtype=settings.latency_dtype, min_run_time_s=settings.latency_min_run_time_s)
    try:
        latency.torch_device()  # a GPU that isn't there fails now, not after the run directory exists
    except CspnasError as e:
        raise CspnasError(f"--latency-device {settings.latency_device}: {str(e).split(';')[0]}; "
                          "measure on this machine's CPU with --latency-device cpu") from None
    meter = CostMeter(latency, MeasureGate(run_dir / ".locks"), input_size)
    if config is None:
        if preflight:  # refuse hopeless limits before any file or Ray exists
            check_constraints_reachable(space, settings, replace(meter, gate=None), data.in_chs, data.num_classes)
        config = new_config(settings, space, data, train_device, latency,
                             _references(settings, replace(meter, gate=None), space, data.in_chs, data.num_classes))
        create_run_dir(run_dir, config)
    else:
        write_yaml_atomic(run_dir / "config.yaml", config)  # records a raised --budget
    crash_point("after_config")
    # -- before the search: what it will roughly cost (cspnas/search/estimate.py) --
    if estimate:
        _print_estimate(space, data, settings, train_device)
    storage = open_storage(run_dir / "study.db")
    # imported here, not at the top: it pulls in Ray Tune (~1 s), which bad input never needs
    from cspnas.search.searcher import count_final, interrupted_to_failed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True,
                                directions=["maximize", "minimize", "minimize"])
    closed = interrupted_to_failed(study)
    meter.remember(study)
    started_done = count_final(study)
    return _tune(settings, space, config, run_dir, storage, data, train_device, meter, closed,
                 started_done, live, dashboard, t0)


def _print_estimate(space, data, settings: SearchSettings, train_device: str) -> None:
    from cspnas.search.estimate import estimate_search

    found = estimate_search(space, data, replace(settings.train, device=train_device), budget=settings.budget,
                            concurrency=settings.concurrency, threads=max(1, int(settings.cpus_per_trial)),
                            seed=settings.seed)
    for line in found.lines() if found is not None else ["estimate: skipped (trials train on the cluster's GPUs)"]:
        print(line, file=sys.stderr, flush=True)


def trial_train_config(settings: SearchSettings, train_device: str) -> dict[str, Any]:
    """TrainConfig keyword arguments for every trial of this search."""
    return asdict(replace(settings.train, device=train_device))


def _tune(settings, space, config, run_dir, storage, data, train_device, meter, closed, started_done, live,
          dashboard, t0):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from cspnas.search.searcher import CspOptunaSearch, SearchContext, count_final
    from cspnas.search.trainable import train_candidate

    on_gpu = train_device.startswith("cuda")
    threads = max(1, int(settings.cpus_per_trial))
    train_cfg = trial_train_config(settings, train_device)
    # absolute: Tune runs each trial in its own working directory (and, on a cluster, another machine)
    data_dir = str(Path(settings.data_dir).expanduser().resolve()) if settings.data_dir else None
    data_spec = {"name": settings.dataset, "data_dir": data_dir, "val_fraction": settings.val_fraction,
                 "split_seed": settings.seed, "train_subset": settings.train_subset, "download": False,
                 "image_size": settings.image_size}

    def trial_config(number: int, arch_json: str) -> dict[str, Any]:
        return {"trial": number, "arch": arch_json, "run_dir": str(run_dir.resolve()), "data": data_spec,
                "train": train_cfg, "evaluator": settings.evaluator,
                "keep_weights": settings.keep_weights != "none", "threads": threads}

    progress = Progress(live=live, started_done=started_done)
    state = {"front": None, "hv": 0.0, "trials": None, "last_write": 0.0, "last_tables": 0.0}

    def on_change(started: bool = False) -> None:
        if started and state["trials"] is not None and time.monotonic() - state["last_tables"] < 2.0:
            # a trial merely started: the status line moves now, the tables at the next tell
            progress.update(_status(state["trials"], state["front"], state["hv"], settings.budget,
                                    len(ctx.running), time.monotonic() - t0))
            return
        state["last_tables"] = time.monotonic()
        trials, front, hv = write_tables(searcher.study, run_dir, config)
        if _prune_weights(run_dir, trials, front, settings.keep_weights):
            trials, front, hv = write_tables(searcher.study, run_dir, config)
        state.update(front=front, hv=hv, trials=trials)
        if dashboard:
            _refresh_dashboard(run_dir, trials, state)
        progress.update(_status(trials, front, hv, settings.budget, len(ctx.running), time.monotonic() - t0))

    ctx = SearchContext(settings=settings, space=space, in_chs=data.in_chs, num_classes=data.num_classes,
                        meter=meter, trial_config=trial_config, on_change=on_change)
    searcher = CspOptunaSearch(ctx, sampler=make_sampler(settings.sampler, settings.seed), storage=storage,
                               study_name=STUDY_NAME)
    scheduler = None
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(metric="val_acc", mode="max", time_attr="epoch", max_t=settings.train.epochs,
                                  grace_period=1, reduction_factor=2)
    start_ray(settings)
    resources = {"cpu": settings.cpus_per_trial}
    if on_gpu:
        import ray

        resources["gpu"] = settings.gpus_per_trial or default_gpus_per_trial(
            float(ray.cluster_resources().get("GPU", 0)), settings.concurrency)
    with progress:
        if closed:
            progress.log(f"resume: trial(s) {closed} were interrupted; their architectures are re-queued")
        on_change()
        if count_final(searcher.study) < settings.budget:
            tuner = tune.Tuner(
                tune.with_resources(train_candidate, resources),
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, settings.concurrency),
                                            scheduler=scheduler, num_samples=-1, reuse_actors=True),
                run_config=tune.RunConfig(name="tune", storage_path=str((run_dir / ".ray").resolve()), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=1)),
            )
            tuner.fit()
        crash_point("finishing")
        on_change()
    trials, front, hv = state["trials"], state["front"], state["hv"]
    return SearchOutcome(run_dir=run_dir, trials=trials, front=front, hypervolume=hv,
                         wall_seconds=time.monotonic() - t0)


def _refresh_dashboard(run_dir: Path, trials, state: dict, every_s: float = 15.0) -> None:
    """Keep RUN/dashboard.html current while searching (cheap version: no importance fit)."""
    if not len(trials) or time.monotonic() - state["last_write"] < every_s:
        return
    state["last_write"] = time.monotonic()
    from cspnas.results.dashboard import write_dashboard

    try:
        write_dashboard(run_dir, importance=False)
    except Exception as e:  # a plotting problem must never stop a search
        log.warning("dashboard refresh failed: %s", e)


def _status(trials, front, hv, budget, running, elapsed) -> Status:
    states = trials["state"].value_counts().to_dict() if len(trials) else {}
    complete = trials[trials["state"] == "complete"]["accuracy"].dropna() if len(trials) else []
    done = sum(states.get(k, 0) for k in ("complete", "infeasible", "pruned", "failed"))
    return Status(done=done, budget=budget, running=running, infeasible=states.get("infeasible", 0),
                  failed=states.get("failed", 0), pruned=states.get("pruned", 0),
                  best_accuracy=float(max(complete)) if len(complete) else None, front_size=len(front),
                  hypervolume=hv, elapsed_s=elapsed)


def _prune_weights(run_dir: Path, trials, front, keep: str) -> bool:
    """Keep weights of front members only (unless --keep-weights all), so disks don't fill up."""
    if keep == "all" or trials is None or not len(trials):
        return False
    keep_paths = set(front["weights"].dropna()) if keep == "front" and len(front) else set()
    finished = trials[trials["state"].isin(["complete", "pruned", "failed"])]
    pruned = False
    for rel in set(finished["weights"].dropna()) - keep_paths - {""}:
        (run_dir / rel).unlink(missing_ok=True)
        pruned = True
    return pruned
