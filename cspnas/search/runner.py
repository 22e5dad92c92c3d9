"""Run a search end to end: run directory, Ray, Optuna study, Tune, tables, summary.

The run directory holds config.yaml (the settings + derived values such as objective
references), study.db (Optuna, the single source of truth), trials.csv / pareto.csv
(derived from the study after every trial), weights/ and dashboard.html.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from cspnas import __version__
from cspnas.cost import LatencySettings
from cspnas.data import load_dataset
from cspnas.errors import CspnasError
from cspnas.search.costs import CostMeter
from cspnas.search.faults import crash_point
from cspnas.search.gate import MeasureGate
from cspnas.search.progress import Progress, Status
from cspnas.search.records import write_tables
from cspnas.search.settings import SearchSettings
from cspnas.space import ArchConfig, StageConfig, StemConfig
from cspnas.space.searchspace import IntRange, SearchSpace, load_space, parse_space

log = logging.getLogger(__name__)
STUDY_NAME = "cspnas"


@dataclass(frozen=True)
class SearchOutcome:
    run_dir: Path
    trials: Any  # pandas DataFrame
    front: Any
    hypervolume: float
    wall_seconds: float


# -- run directory -----------------------------------------------------------------------------

def _write_yaml_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise CspnasError(f"{run_dir}: no such run directory; --resume takes the folder a search wrote, "
                          "e.g. results/<name>")
    if not path.is_file():
        raise CspnasError(f"{run_dir}: not a cspnas run (config.yaml is missing); --resume takes the folder a "
                          "search wrote, e.g. results/<name>")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise CspnasError(f"{path}: corrupt YAML; restore it or start a new run with another --name") from None
    if not isinstance(config, dict) or "settings" not in config:
        raise CspnasError(f"{path}: not a cspnas run config (no 'settings'); start a new run with another --name")
    return config


def open_storage(path: Path) -> optuna.storages.RDBStorage:
    """The study's SQLite storage in WAL mode: every Optuna write is a commit, and with the
    default rollback journal each one costs an fsync (~15 ms here); WAL + synchronous=NORMAL
    stays consistent across a killed process and makes writes ~10x cheaper."""
    import sqlalchemy

    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})

    def on_connect(conn, _record) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect so the pragmas apply to every connection
    return storage


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


def _resolve_train_device(name: str) -> str:
    from cspnas.train import resolve_device

    return str(resolve_device(name))


# -- pre-flight: can anything in the space meet the hard limits? ----------------------------------

PREFLIGHT_SAMPLES = 200  # random architectures looked at (plus one cheap corner per stage/block type)
PREFLIGHT_LATENCY_CANDIDATES = 3  # latency is measured only for this many of the cheapest by MACs


class _CornerTrial:
    """Stands in for an optuna.Trial and answers every knob with its cheapest value (fewest
    channels, shallowest, largest stride, no SE, ...), with the given stage and block type where
    the space offers them. Random samples rarely hit these corners; a tight limit often needs one."""

    def __init__(self, stage_type: str, block_type: str):
        self.stage_type, self.block_type = stage_type, block_type

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return high if name.endswith("stride") else low

    def suggest_categorical(self, name: str, choices):
        key = name.rsplit(".", 1)[-1]
        if key in ("stage_type", "block_type"):
            want = self.stage_type if key == "stage_type" else self.block_type
            return want if want in choices else choices[0]
        if all(isinstance(c, bool) for c in choices):
            return False  # down_growth / cross_linear: False is the narrower one
        numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if len(numbers) == len(choices):
            return max(numbers) if key in ("stride", "groups") else min(numbers)
        return choices[0]


def _corner_archs(space: SearchSpace, in_chs: int, num_classes: int) -> list[ArchConfig]:
    kinds: dict[str, list[str]] = {"stage_type": [], "block_type": []}
    for spec in space.stages:
        for key, names in kinds.items():
            value = spec.get(key, "csp" if key == "stage_type" else "dark")
            for v in value if isinstance(value, tuple) else (value,):
                if v not in names:
                    names.append(v)
    return [space.sample(_CornerTrial(st, bt), in_chs=in_chs, num_classes=num_classes)
            for st in kinds["stage_type"] for bt in kinds["block_type"]]


def _conv_linear_macs(model, in_chs: int, input_size: int) -> int:
    """A cheap lower bound of fvcore's MAC count: convolutions and linear layers only (fvcore adds
    batch-norm and pooling). Shapes come from one forward pass, on the meta device for big inputs."""
    import torch
    from torch import nn

    total = 0

    def hook(m, _inputs, out) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    device = "cpu" if input_size <= 64 else "meta"
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.to(device).eval()(torch.zeros(1, in_chs, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def _check_constraints_reachable(space: SearchSpace, settings: SearchSettings, meter: CostMeter, in_chs: int,
                                 num_classes: int) -> None:
    """Raise CspnasError, before the run directory exists, when the hard limits rule out the space.

    Looks at one cheapest corner per stage/block type and PREFLIGHT_SAMPLES random architectures
    (Optuna's RandomSampler on an in-memory study, seeded by --seed): params, and MACs as a
    conv+linear lower bound confirmed with the exact fvcore count where it passes. With a latency
    limit it measures the first candidate within the other limits, then the
    PREFLIGHT_LATENCY_CANDIDATES cheapest by MACs. Returns as soon as one candidate meets every
    limit; writes nothing (latency is measured without the run's MeasureGate, whose locks live in
    the run directory). A space whose only feasible corners are missed by the sample is refused
    wrongly; `run_search(preflight=False)` skips the check.
    """
    from cspnas.cost import count_macs, count_params, measure_latency
    from cspnas.models import build_model
    from cspnas.units import format_count, format_duration_ms

    c = settings.constraints
    if c.max_params is None and c.max_macs is None and c.max_latency_ms is None:
        return
    size = meter.input_size
    latency_settings = replace(meter.latency, in_chs=in_chs, input_size=size)
    latencies: dict[str, float] = {}

    def latency_of(arch: ArchConfig) -> float:
        key = arch.arch_hash()
        if key not in latencies:
            latencies[key] = measure_latency(build_model(arch), latency_settings).median_ms
        return latencies[key]

    def exact_macs(arch: ArchConfig) -> int:
        return count_macs(build_model(arch), in_chs=in_chs, input_size=size).total

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=settings.seed))
    candidates = _corner_archs(space, in_chs, num_classes)
    seen: dict[str, tuple[int, int, ArchConfig]] = {}  # hash -> (params, MACs or their lower bound, arch)
    within: list[tuple[int, ArchConfig]] = []  # (MACs, arch) meeting the params and MACs limits
    samples = 0
    while candidates or samples < PREFLIGHT_SAMPLES:
        if candidates:
            arch = candidates.pop(0)
        else:
            samples += 1
            arch = space.sample(study.ask(), in_chs=in_chs, num_classes=num_classes)
        key = arch.arch_hash()
        if key in seen:
            continue
        model = build_model(arch)
        params = count_params(model)
        need_macs = c.max_macs is not None or c.max_latency_ms is not None
        macs = _conv_linear_macs(model, in_chs, size) if need_macs else 0
        ok = c.max_params is None or params <= c.max_params
        if ok and c.max_macs is not None and macs <= c.max_macs:
            macs = exact_macs(arch)  # the lower bound passes: check the count the search uses
        ok = ok and (c.max_macs is None or macs <= c.max_macs)
        seen[key] = (params, macs, arch)
        if ok:
            within.append((macs, arch))
            if c.max_latency_ms is None or (len(within) == 1 and latency_of(arch) <= c.max_latency_ms):
                return

    ms = c.max_latency_ms
    latency_limit = (None if ms is None else f"{ms:.3g} ms" if ms >= 1 else f"{ms * 1e3:.3g} us" if ms >= 1e-3
                     else f"{ms * 1e6:.3g} ns")
    limits = [f"--max-params {format_count(c.max_params)}" if c.max_params is not None else "",
              f"--max-macs {format_count(c.max_macs)}" if c.max_macs is not None else "",
              f"--target-latency {latency_limit}" if latency_limit is not None else ""]
    meets = " and ".join(x for x in limits if x)
    looked = f"{len(seen)} sampled architectures"
    if within:  # params/MACs can be met, latency can't: measure the cheapest few
        cheapest = [a for _, a in sorted(within, key=lambda t: t[0])[:PREFLIGHT_LATENCY_CANDIDATES]]
        fastest = min(latency_of(a) for a in cheapest)
        if fastest <= c.max_latency_ms:
            return
        found = (f"the fastest of the {len(cheapest)} with the fewest MACs among {looked} takes "
                 f"{format_duration_ms(fastest)}")
    else:
        parts = []
        if c.max_params is not None:
            parts.append(f"{format_count(min(p for p, _, _ in seen.values()))} params")
        if c.max_macs is not None or c.max_latency_ms is not None:
            arch = min(seen.values(), key=lambda t: t[1])[2]
            parts.append(f"{format_count(exact_macs(arch))} MACs")
        if c.max_latency_ms is not None:
            parts.append(f"{format_duration_ms(latency_of(arch))} for the one with the fewest MACs")
        found = f"fewest among {looked}: {', '.join(parts)}"
    raise CspnasError(f"no architecture in space '{space.name}' meets {meets} ({found}); "
                      "raise the limit or use a smaller space")


# -- Ray --------------------------------------------------------------------------------------------

CLUSTER_PROBE_TIMEOUT_S = 5.0


def check_cluster_address(address: str) -> None:
    """Fail in one line when nothing listens at --address (ray.init retries such an address for
    minutes). Probes the address Ray will dial: Ray turns 127.0.0.1 / localhost into this
    machine's external IP unless cluster mode is off."""
    from ray._private.services import canonicalize_bootstrap_address

    hint = "check the address (`ray status` on the head node) or drop --address to run locally"
    malformed = f"--address {address}: expected HOST:PORT of the Ray head node, e.g. 10.0.0.5:6379"
    if address.startswith("ray://"):
        target = address[len("ray://"):]
    else:
        try:
            target = canonicalize_bootstrap_address(address) or address
        except ValueError:
            raise CspnasError(malformed) from None
        except ConnectionError as e:  # "auto" and no cluster found
            raise CspnasError(f"--address {address}: {str(e).splitlines()[0]}; {hint}") from None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise CspnasError(malformed)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CLUSTER_PROBE_TIMEOUT_S).close()
    except OSError as e:
        via = f" (Ray dials {target})" if target != address else ""
        raise CspnasError(f"cannot join the Ray cluster at {address}{via}: "
                          f"{e.strerror or type(e).__name__}; {hint}") from None


def _start_ray(settings: SearchSettings) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we keep our own records
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # our searcher reads its own keys
    import ray

    # Tune's end-of-run analysis looks for per-trial logger files we disabled; it only warns.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    kwargs = dict(configure_logging=True, logging_level=logging.WARNING, log_to_driver=False)
    if settings.address:
        check_cluster_address(settings.address)
        try:
            ray.init(address=settings.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            causes, cause = [], e
            while cause is not None:
                causes.append(str(cause))
                cause = cause.__cause__
            if any("InvalidAuthToken" in c or "Unauthenticated" in c for c in causes):
                raise CspnasError(f"the Ray cluster at {settings.address} refused us: it uses token "
                                  "authentication; set RAY_AUTH_MODE=token and give the cluster's token in "
                                  "RAY_AUTH_TOKEN_PATH (a file) or RAY_AUTH_TOKEN") from None
            raise CspnasError(f"cannot join the Ray cluster at {settings.address}: {str(e).splitlines()[0]}; "
                              "check the address (ray status) or drop --address to run locally") from None
    else:
        # Local: nothing may listen beyond loopback. Ray turns a 127.0.0.1 node address into
        # the machine's external IP and then binds its gRPC servers to every interface,
        # unless "cluster mode" is off, in which case it uses loopback and binds only there.
        import ray._private.ray_constants as ray_constants

        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **kwargs)


# -- the search -------------------------------------------------------------------------------------

def prepare_run(settings: SearchSettings) -> Path:
    """Create RUN = results_dir/name; refuse to touch an existing one."""
    run_dir = Path(settings.results_dir) / settings.name
    if run_dir.exists():
        raise CspnasError(f"{run_dir} already exists; continue it with `cspnas search --resume {run_dir}` "
                          "or choose another --name")
    return run_dir


def run_search(settings: SearchSettings | None = None, *, resume: str | Path | None = None,
               budget: int | None = None, live: bool | None = None, preflight: bool = True) -> SearchOutcome:
    """Search (or resume RUN) to the budget. `preflight=False` skips the check that the hard limits
    can be met at all (see _check_constraints_reachable), e.g. to benchmark an all-infeasible search."""
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
        _start_ray(settings)  # join before any file exists: a wrong address or token leaves no run behind

    data = load_dataset(settings.dataset, settings.data_dir, val_fraction=settings.val_fraction,
                        split_seed=settings.seed, train_subset=settings.train_subset)
    train_device = _resolve_train_device(settings.device)
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
            _check_constraints_reachable(space, settings, replace(meter, gate=None), data.in_chs, data.num_classes)
        config = _new_config(settings, space, data, train_device, latency,
                             _references(settings, replace(meter, gate=None), space, data.in_chs, data.num_classes))
        _create_run_dir(run_dir, config)
    else:
        _write_yaml_atomic(run_dir / "config.yaml", config)  # records a raised --budget
    crash_point("after_config")
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
                 started_done, live, t0)


def _new_config(settings: SearchSettings, space: SearchSpace, data, train_device: str, latency: LatencySettings,
                refs: tuple[float, float]) -> dict[str, Any]:
    return {
        "cspnas_version": __version__, "created_at": dt.datetime.now().isoformat(timespec="seconds"),
        "settings": settings.to_dict(), "space_yaml": space.source, "space_name": space.name,
        "data": data.summary(), "num_classes": data.num_classes, "in_chs": data.in_chs,
        "input_size": data.input_size, "train_device": train_device, "latency": latency.to_dict(),
        "macs_ref": refs[0], "latency_ref_ms": refs[1],
        "target_latency_ms": settings.constraints.max_latency_ms,
        "max_macs": settings.constraints.max_macs, "max_params": settings.constraints.max_params,
    }


def _create_run_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """RUN appears whole or not at all: config.yaml and an empty study are made in a hidden
    staging folder that is renamed into place, so a crash never leaves a half-made run."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = run_dir.with_name(f".{run_dir.name}.creating-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _write_yaml_atomic(staging / "config.yaml", config)
        storage = open_storage(staging / "study.db")
        optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=["maximize", "minimize", "minimize"])
        storage.engine.dispose()
        os.rename(staging, run_dir)  # fails if RUN appeared meanwhile: never overwrite
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _tune(settings, space, config, run_dir, storage, data, train_device, meter, closed, started_done, live, t0):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from cspnas.search.searcher import CspOptunaSearch, SearchContext, count_final
    from cspnas.search.trainable import train_candidate

    on_gpu = train_device.startswith("cuda")
    threads = max(1, int(settings.cpus_per_trial))
    train_cfg = {"epochs": settings.epochs, "batch_size": settings.batch_size, "lr": settings.lr,
                 "seed": settings.seed, "device": train_device}
    # absolute: Tune runs each trial in its own working directory (and, on a cluster, another machine)
    data_dir = str(Path(settings.data_dir).expanduser().resolve()) if settings.data_dir else None
    data_spec = {"name": settings.dataset, "data_dir": data_dir, "val_fraction": settings.val_fraction,
                 "split_seed": settings.seed, "train_subset": settings.train_subset, "download": False}

    def trial_config(number: int, arch_json: str) -> dict[str, Any]:
        return {"trial": number, "arch": arch_json, "run_dir": str(run_dir.resolve()), "data": data_spec,
                "train": train_cfg, "keep_weights": settings.keep_weights != "none", "threads": threads}

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
        _refresh_dashboard(run_dir, trials, state)
        progress.update(_status(trials, front, hv, settings.budget, len(ctx.running), time.monotonic() - t0))

    ctx = SearchContext(settings=settings, space=space, in_chs=data.in_chs, num_classes=data.num_classes,
                        meter=meter, trial_config=trial_config, on_change=on_change)
    searcher = CspOptunaSearch(ctx, sampler=make_sampler(settings.sampler, settings.seed), storage=storage,
                               study_name=STUDY_NAME)
    scheduler = None
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(metric="val_acc", mode="max", time_attr="epoch", max_t=settings.epochs,
                                  grace_period=1, reduction_factor=2)
    resources = {"cpu": settings.cpus_per_trial}
    if on_gpu:
        resources["gpu"] = settings.gpus_per_trial or 1.0 / settings.concurrency
    _start_ray(settings)
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
