"""Run a search end to end: run directory, Ray, Optuna study, Tune, tables, summary.

The run directory holds config.yaml (the settings + derived values such as objective
references), study.db (Optuna, the single source of truth), trials.csv / pareto.csv
(derived from the study after every trial), weights/ and dashboard.html.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from cspnas import run_format
from cspnas.cost import LatencySettings
from cspnas.data import load_dataset
from cspnas.errors import CspnasError
from cspnas.objectives import references
from cspnas.runlock import RunLock
from cspnas.search.costs import CostMeter
from cspnas.search.finalists import check_epochs, check_finalist_device, run_finalists
from cspnas.faults import crash_point
from cspnas.search.gate import MeasureGate
from cspnas.search.interrupt import StopRequest, resume_hint
from cspnas.search.leftovers import end_leftovers, local_ray_processes
from cspnas.search.loop import SearchLoop
from cspnas.search.measurer import (check_same_measurer, fingerprint_here, reserved_cores, start_measurer,
                                    training_cores)
from cspnas.search.preflight import check_constraints_reachable
from cspnas.search.ray_session import start_ray
from cspnas.search.resume import check_resume, record_resume, sampler_seed
from cspnas.search.settings import CPU_CONCURRENCY, SearchSettings
from cspnas.space import ArchConfig
from cspnas.space.searchspace import SearchSpace, load_space, parse_space
from cspnas.study_db import study_attr

@dataclass(frozen=True)
class SearchOutcome:
    run_dir: Path
    trials: Any  # pandas DataFrame
    front: Any
    hypervolume: float
    wall_seconds: float


# -- sampler, data, references ---------------------------------------------------------------------

def make_sampler(name: str, seed: int, trials: int = 0) -> optuna.samplers.BaseSampler:
    """`trials`: how many the study already has; a resume's draws follow from it (resume.sampler_seed)."""
    seed = seed if name == "qmc" else sampler_seed(seed, trials)  # QMC continues its sequence from the study
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, independent_sampler=optuna.samplers.RandomSampler(
            seed=sampler_seed(seed, trials)))
    return optuna.samplers.RandomSampler(seed=seed)


def _largest_arch(space: SearchSpace, in_chs: int, num_classes: int) -> ArchConfig:
    return space.largest(in_chs, num_classes)


def _references(settings: SearchSettings, meter: CostMeter, space: SearchSpace, in_chs: int,
                num_classes: int) -> dict[str, float]:
    """Fixed hypervolume references (cspnas.objectives.references); a large candidate is measured
    only for an objective without a limit."""
    return references(settings.objectives, settings.constraints.limits(),
                      lambda: meter.measure(_largest_arch(space, in_chs, num_classes)))


def latency_settings(settings: SearchSettings, in_chs: int, input_size: int) -> LatencySettings:
    """How this search times a candidate (experiments time baselines the same way)."""
    return LatencySettings(backend=settings.latency_backend, device=settings.latency_device,
                           batch_size=settings.latency_batch_size, in_chs=in_chs, input_size=input_size,
                           threads=settings.latency_threads, dtype=settings.latency_dtype,
                           min_run_time_s=settings.latency_min_run_time_s, precision=settings.latency_precision,
                           statistic=settings.latency_statistic,
                           calibration_seed=settings.seed)


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


def default_gpus_per_trial(total_gpus: float, concurrency: int, trials_per_gpu: int | None = None) -> float:
    """GPU share of one trial when --gpus-per-trial is not given: spread `concurrency` trials over
    all GPUs, sharing a GPU only when there are more trials than GPUs, at most `trials_per_gpu` on
    one GPU (never more than 1)."""
    share = min(1.0, max(total_gpus, 1.0) / concurrency)
    return max(share, 1.0 / trials_per_gpu) if trials_per_gpu else share


def derive_concurrency(settings: SearchSettings, train_device: str, space: SearchSpace, data) -> tuple[int, str]:
    """--concurrency when not given, and why: on the CPU the fixed CPU_CONCURRENCY; on CUDA every GPU
    packed, i.e. trials per GPU (--gpus-per-trial's share, --trials-per-gpu, else as many of the space's
    largest candidate as fit in the GPU's memory) x the GPUs (the cluster's with --address, else this
    machine's)."""
    if not train_device.startswith("cuda"):
        return CPU_CONCURRENCY, "training on the CPU"
    if settings.address:
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
    else:
        import torch

        gpus = torch.cuda.device_count()
    if settings.gpus_per_trial:
        per_gpu, why = max(1, int(1 / settings.gpus_per_trial + 1e-9)), "--gpus-per-trial"
    elif settings.trials_per_gpu:
        per_gpu, why = settings.trials_per_gpu, "--trials-per-gpu"
    else:
        per_gpu, why = fitting_trials_per_gpu(space, data, settings.train) or (1, "no local GPU to size packing by")
    gpus = max(1, gpus)
    return gpus * per_gpu, f"{per_gpu} per GPU ({why}) x {gpus} GPU{'s' * (gpus > 1)}"


def fitting_trials_per_gpu(space: SearchSpace, data, train) -> tuple[int, str] | None:
    """Trials per GPU that the space's largest candidate allows on this machine's first GPU (its memory
    against the candidate's estimated training peak, cspnas.search.packing), and why; None without a
    local GPU (a cluster's driver): then only the ledger's admission keeps packed trials apart."""
    import torch

    from cspnas.search.packing import default_trials_per_gpu, trial_bytes
    from cspnas.space.footprint import format_bytes
    from cspnas.train.loop import eval_batch_size

    if not torch.cuda.is_available():
        return None
    _free, total = torch.cuda.mem_get_info(0)
    data_bytes = sum(t.untyped_storage().nbytes() for t in (data.train_x, data.train_y, data.val_x, data.val_y))
    need = trial_bytes(space.largest(data.in_chs, data.num_classes), data.input_size, train.batch_size,
                       eval_batch_size(train, torch.device("cuda")), data_bytes, "cuda")
    n = default_trials_per_gpu(total, need)
    return n, f"the largest candidate needs about {format_bytes(need)} of the GPU's {format_bytes(total)}"


def _resolve_train_device(settings: SearchSettings) -> str:
    if settings.address:  # Ray is already joined (run_search joins before anything else)
        import ray

        return cluster_train_device(settings.device, float(ray.cluster_resources().get("GPU", 0)))
    from cspnas.train import resolve_device

    return str(resolve_device(settings.device))


# -- the search -------------------------------------------------------------------------------------

def run_search(settings: SearchSettings | None = None, *, resume: str | Path | None = None,
               budget: int | None = None, given: dict[str, Any] | None = None, live: bool | None = None,
               preflight: bool = True, dashboard: bool = True, estimate: bool = False) -> SearchOutcome:
    """Search (or resume RUN) to the budget. `given`: on resume, the settings the user gave again
    (flattened keys, see resume.resume_settings); `budget` is short for given={"budget": N}.
    `preflight=False` skips the check that the hard limits
    can be met at all (see preflight.check_constraints_reachable), e.g. to benchmark an all-infeasible search.
    `dashboard=False` (the CLI's --no-dashboard) never writes RUN/dashboard.html, not even while searching.
    `estimate=True` (the CLI's) prints what the search will roughly cost before it starts."""
    t0 = time.monotonic()
    changed, used, trials_before = {}, 0, 0
    if resume is not None:
        run_dir = Path(resume)
        given = {**(given or {}), **({"budget": budget} if budget is not None else {})}
        config, changed, used, trials_before = check_resume(run_dir, given)  # refused: nothing was written
        settings = SearchSettings.from_dict(config["settings"])
        if settings.finalists:  # finalists of one run share one length: refused now, before anything is written
            recorded = study_attr(run_dir / run_format.STUDY, run_format.FINAL_ATTR) or {}
            check_epochs(run_dir, {int(k): v for k, v in recorded.items()}, settings.final_epochs)
        space = parse_space(config["space_yaml"], origin=f"{run_dir}/config.yaml:space_yaml")
    else:
        assert settings is not None
        space = load_space(settings.space)
        run_dir = run_format.new_run_dir(settings.results_dir, settings.name)
        config = None
    if settings.address:
        start_ray(settings)  # join before any file exists: a wrong address or token leaves no run behind

    data = load_dataset(settings.dataset, settings.data_dir, val_fraction=settings.val_fraction,
                        split_seed=settings.seed, train_subset=settings.train_subset, image_size=settings.image_size)
    train_device = _resolve_train_device(settings)
    if settings.finalists:  # they train in this process: a device it lacks fails now, not after the trials
        check_finalist_device(train_device)
    derived = None  # said once the search starts: bad input must stay one line
    if settings.concurrency is None:  # derived once, then recorded in config.yaml like a given value
        concurrency, why = derive_concurrency(settings, train_device, space, data)
        settings = replace(settings, concurrency=concurrency)
        derived = f"concurrency: {concurrency} ({why})"
    input_size = settings.latency_input_size or data.input_size
    latency = latency_settings(settings, data.in_chs, input_size)
    try:
        latency.torch_device()  # a GPU that isn't there fails now, not after the run directory exists
    except CspnasError as e:
        raise CspnasError(f"--latency-device {settings.latency_device}: {str(e).split(';')[0]}; "
                          "measure on this machine's CPU with --latency-device cpu") from None
    # the measuring actor (cspnas.search.measurer: where it runs, whom it pauses), before any file exists
    cores = [] if settings.address else reserved_cores(settings.latency_threads)
    same_gpu = latency.device.startswith("cuda") and train_device.startswith("cuda")
    calibration = None
    if latency.precision == "int8":  # calibrated on this search's training images (the count is recorded)
        from cspnas.train.quantized import calibration_batch

        calibration = calibration_batch(data, latency.calibration_images, latency.calibration_seed, input_size)
    from cspnas.cost.zero_cost import SCORE_IMAGES, SCORES
    from cspnas.train.quantized import image_batch

    # absolute: the measuring actor and the trainers may run with another working directory (a Ray node
    # started elsewhere) and must flock the same files as this driver
    locks = run_dir.resolve() / ".locks"
    # zero-cost scores: every candidate on the same training images (chosen by --seed), at the training size
    meter = CostMeter(latency, MeasureGate(locks), input_size, calibration=calibration,
                      score_batch=image_batch(data, SCORE_IMAGES, settings.seed),
                      pause_trainers=not settings.latency_node and (not cores or same_gpu),
                      predictor=_latency_model(settings, space, latency, run_dir if resume is not None else None),
                      confirm_near_ms=settings.constraints.max_latency_ms if settings.confirm_latency else None)

    def measurer():
        start_ray(settings, reserved=len(cores))  # joined already: a no-op
        return start_measurer(latency, locks, cores=cores, latency_node=settings.latency_node,
                              calibration=calibration)

    measured_on = None
    if settings.address:  # joined: the pre-flight's latencies come from the measurer too (it may be elsewhere)
        meter.measurer, measured_on = measurer()
    if config is not None:  # a resume, refused before anything is written; locally the measurer is this machine
        check_same_measurer(config.get("measured_on"), measured_on or fingerprint_here(latency), run_dir)
    else:
        if preflight:  # refuse hopeless limits before any file (and locally before Ray) exists
            check_constraints_reachable(space, settings, replace(meter, gate=None, score_batch=None), data.in_chs,
                                        data.num_classes)
        if meter.measurer is None:  # the references are timed where the search times
            meter.measurer, measured_on = measurer()
        config = run_format.new_config(
            settings=settings.to_dict(), space_yaml=space.source, space_name=space.name, data=data.summary(),
            num_classes=data.num_classes, in_chs=data.in_chs, input_size=data.input_size, train_device=train_device,
            latency=latency.to_dict(),
            references=_references(settings, replace(meter, gate=None, score_batch=None), space, data.in_chs,
                                   data.num_classes))
        config["measured_on"] = measured_on
        config["zero_cost"] = {"images": len(meter.score_batch[0]), "seed": settings.seed,
                               "init_seed": 0, "scores": sorted(SCORES)}
        copies = {run_format.LATENCY_MODEL: json.dumps(meter.predictor.to_dict(), indent=1)} if meter.predictor else {}
        run_format.create_run_dir(run_dir, config, copies)
    # one search per run (a second one is refused here, naming this one); Ctrl-C/SIGTERM stop it cleanly
    with RunLock(run_dir) as lock, StopRequest() as stop:
        # -- resume (issue 17): a dead previous holder's Ray processes, the history of resumes
        ended = end_leftovers(lock.previous) if lock.previous is not None else 0
        if resume is not None:
            record_resume(config, changed, used)
            run_format.write_yaml_atomic(run_dir / run_format.CONFIG, config)
        crash_point("after_config")
        if derived is not None:
            print(derived, file=sys.stderr, flush=True)
        if estimate:  # what the search will roughly cost (cspnas/search/estimate.py), before any training
            _print_estimate(space, data, settings, train_device)
        study = run_format.open_study(run_format.open_storage(run_dir / run_format.STUDY), settings.objectives,
                                      make_sampler(settings.sampler, settings.seed, trials_before))
        loop = SearchLoop(settings=settings, space=space, config=config, run_dir=run_dir, study=study, meter=meter,
                          in_chs=data.in_chs, num_classes=data.num_classes,
                          trial_spec={**_trial_spec(settings, run_dir, train_device), "cores": training_cores(cores)},
                          live=live, dashboard=dashboard,
                          t0=t0)
        if ended:
            loop.progress.log(f"ended {ended} Ray process(es) left by the killed search {lock.previous.describe()}")
        loop.prepare()
        if meter.measurer is None:  # a local resume starts Ray once the run is ours
            meter.measurer, _ = measurer()
        resources = _trial_resources(settings, train_device, space, data, loop.progress.log)  # starts Ray
        from cspnas.search.schedulers import make_scheduler  # imports Ray, started above

        stop.install()  # take the signals back from Ray
        if not settings.address:  # a local session is ours to clean up if this driver dies
            loop.on_trial_start = lambda: lock.record_ray(local_ray_processes())
            loop.on_trial_start()
        loop.stop = stop
        try:
            loop.run(resources, make_scheduler(settings, loop))
        except KeyboardInterrupt:  # a second Ctrl-C
            raise resume_hint(run_dir, signal.SIGINT) from None
        if loop.driver_record is not None and loop.disk_full is None:  # the driver's busy share, one per session
            config.setdefault("driver", []).append(loop.driver_record)
            run_format.write_yaml_atomic(run_dir / run_format.CONFIG, config)
        if settings.finalists and not stop.requested and loop.disk_full is None:
            try:
                with stop.forcible():
                    run_finalists(run_dir, config, study, settings.finalists, settings.final_epochs,
                                  device=train_device, log=loop.progress.log, stop=lambda: stop.requested,
                                  on_result=lambda: loop.refresh(rebuild=True))  # pareto.csv as each finishes
            except KeyboardInterrupt:
                raise resume_hint(run_dir, stop.signum or signal.SIGINT) from None
            loop.finish()  # the front on final accuracy, the dashboard
        if stop.requested:
            raise resume_hint(run_dir, stop.signum)
        if loop.disk_full is not None:
            raise CspnasError(f"disk full while searching ({loop.disk_full}); free space, then continue with "
                              f"`cspnas search --resume {run_dir}` (the trial it hit is re-queued)")
    shown = loop.tables.shown is not None  # finalists: their front on final accuracy
    return SearchOutcome(run_dir=run_dir, trials=loop.trials, front=loop.tables.shown if shown else loop.front,
                         hypervolume=loop.tables.shown_hypervolume if shown else loop.hypervolume,
                         wall_seconds=time.monotonic() - t0)


def _latency_model(settings: SearchSettings, space: SearchSpace, latency: LatencySettings, run_dir: Path | None):
    """--latency-model: the model, refused in one line if it was fitted for another space or latency
    setting, or (with --confirm-latency, which measures here) for another device. A resumed run
    (`run_dir`) predicts with the copy it made when it started, whatever became of the file since."""
    if settings.latency_model is None:
        return None
    from cspnas.latency_model.model import load_model
    from cspnas.latency_model.profile import compare_fingerprints, fingerprint, space_id

    copy = run_dir / run_format.LATENCY_MODEL if run_dir is not None else None
    model = load_model(copy if copy is not None and copy.is_file() else settings.latency_model)
    try:
        warnings = model.applies_to(space_id(space), latency.to_dict())
        if settings.confirm_latency:
            warnings += compare_fingerprints(model.valid_for["fingerprint"], fingerprint(latency),
                                             "--confirm-latency: the latency model")
    except CspnasError as e:
        raise CspnasError(f"--latency-model {settings.latency_model}: {e}") from None
    for line in warnings:
        print(f"warning: --latency-model {settings.latency_model}: {line}", file=sys.stderr, flush=True)
    return model


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


def _trial_spec(settings: SearchSettings, run_dir: Path, train_device: str) -> dict[str, Any]:
    """The part of every trial's Ray config that does not depend on the candidate."""
    return {"run_dir": str(run_dir.resolve()), "data": settings.data_spec(),
            "train": trial_train_config(settings, train_device), "evaluator": settings.evaluator,
            "keep_weights": settings.keep_weights != "none", "threads": max(1, int(settings.cpus_per_trial)),
            "worker_trials": settings.worker_trials,
            # int8 latency: every complete trial's int8 accuracy, quantized as its latency was
            "int8": ({"calibration_images": LatencySettings.calibration_images, "seed": settings.seed}
                     if settings.latency_precision == "int8" else None)}


def _trial_resources(settings: SearchSettings, train_device: str, space: SearchSpace, data,
                     log) -> dict[str, float]:
    start_ray(settings)
    resources = {"cpu": settings.cpus_per_trial}
    if train_device.startswith("cuda"):
        import ray

        per_gpu, why = settings.trials_per_gpu, "--trials-per-gpu"
        if per_gpu is None and settings.gpus_per_trial is None:
            per_gpu, why = fitting_trials_per_gpu(space, data, settings.train) or (None, "")
        resources["gpu"] = settings.gpus_per_trial or default_gpus_per_trial(
            float(ray.cluster_resources().get("GPU", 0)), settings.concurrency, per_gpu)
        log(f"packing: {resources['gpu']:g} GPU per trial" + (f", at most {per_gpu} per GPU ({why})" if per_gpu else ""))
    return resources

