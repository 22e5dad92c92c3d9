"""Search settings: everything needed to rerun a search, recorded as the run's config.yaml."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cspnas.cost.backends import check_latency_backend
from cspnas.cost.settings import PRECISIONS, LatencySettings
from cspnas.cost.timing import STATISTICS
from cspnas.cost.zero_cost import SCORES, parse_prefilter
from cspnas.errors import CspnasError
from cspnas.objectives import ACCURACY_NOISE_POINTS, DEFAULT_OBJECTIVES, OBJECTIVES, check_limits, parse_objectives
from cspnas.search.evaluators import DEFAULT_EVALUATOR, check_evaluator
from cspnas.train.config import TrainConfig

SAMPLERS = ("tpe", "nsga2", "random", "qmc")
# trials at once when training on the CPU and --concurrency is not given (on CUDA it is derived from packing:
# cspnas.search.runner.derive_concurrency)
CPU_CONCURRENCY = 2
SCHEDULERS = ("none", "asha", "pareto")
# --train-precision -> TrainConfig fields (they only act on CUDA)
TRAIN_PRECISIONS = {"fp32": {"bf16": False, "channels_last": False}, "bf16": {"bf16": True, "channels_last": True}}


@dataclass(frozen=True)
class Constraints:
    """Hard limits; a candidate that breaks one is recorded as infeasible and never trained.
    Each field is named by an objective's `limit` in cspnas.objectives, which says how to check it."""

    max_latency_ms: float | None = None
    max_macs: int | None = None
    max_params: int | None = None
    max_memory: int | None = None  # bytes of peak activation memory at batch 1

    def limits(self) -> dict[str, float | None]:
        """Limits by objective name."""
        return {s.name: getattr(self, s.limit) for s in OBJECTIVES.values() if s.limit}

    def check(self, cost: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
        """Optuna constraint values (<= 0 is feasible, relative excess otherwise) and readable violations."""
        return check_limits(self.limits(), cost)


def _setting(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A settings field whose help text (the CLI's) lives beside its default."""
    return field(default=default, metadata={"help": help}, **kw)


def search_training(**changes: Any) -> TrainConfig:
    """The brief training of every trial: TrainConfig's recipe in fp32, with `changes`.

    fp32 (cuDNN may use TF32): on an H100 the brief proxy trainings ran 0.75-0.94x as fast with
    bf16 autocast + channels_last (results/benchmarks/gpu_check.json, gpu_precision_32px.json).
    """
    return TrainConfig(**{**TRAIN_PRECISIONS["fp32"], **changes})


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of a search: the one place their defaults and help texts live.

    `train` is the trials' training recipe; its seed and device are this search's `seed` and
    `device` (kept in step here, written once in config.yaml).
    """

    name: str
    results_dir: str = _setting("results", "where run directories are written")
    space: str = _setting("default", "bundled space name or YAML path")
    dataset: str = _setting("digits", "digits (bundled) | cifar10 | cifar100 | mnist | fashion-mnist | folder")
    data_dir: str | None = _setting(None, "where the data set's files are (folder: train/ and val/ or test/)")
    val_fraction: float = _setting(0.1, "share of the training data held out for validation")
    train_subset: int | None = _setting(None, "train on a stratified subset of N images")
    budget: int = _setting(50, "architectures to train (infeasible candidates are screened out and use none)")
    screen_limit: int | None = _setting(None, "candidates screened at most, infeasible ones included, before a search "
                                              "that finds too few feasible ones stops (default 50 x budget)")
    train: TrainConfig = _setting(default_factory=search_training, help="brief training of every trial")
    evaluator: str = _setting(DEFAULT_EVALUATOR, "how a candidate is scored (cspnas.search.evaluators)")
    prefilter: str | None = _setting(None, "SCORE:F: don't train a feasible candidate whose zero-cost score ranks "
                                           "in the bottom fraction F of the feasible candidates screened so far "
                                           f"(recorded as prefiltered; no budget used); SCORE: {', '.join(SCORES)}")
    prefilter_warmup: int = _setting(10, "feasible candidates scored before --prefilter skips any")
    concurrency: int | None = _setting(None, "trials trained at once (default: on CUDA, trials per GPU x GPUs, "
                                             f"see --trials-per-gpu; on the CPU {CPU_CONCURRENCY}); the run "
                                             "records the number used")
    sampler: str = _setting("tpe", " | ".join(SAMPLERS))
    scheduler: str = _setting("none", "none | asha | pareto: early stopping at rungs of 1, 2, 4... epochs (stopped "
                                      "trials never reach the front); pareto stops a trial only when, with its exact "
                                      "costs, it is off the front of its rung by more than --pareto-margin")
    # 2 points: the brief-training noise floor seen across CPUs (0.292-0.313 for one arch, issue 14)
    pareto_margin: float = _setting(0.02, "with --scheduler pareto: accuracy (0-1) a trial is credited with at a "
                                          "rung before it must be dominated there to stop")
    seed: int = _setting(0, "seed of the sampler, the validation split and every trial's training")
    device: str = _setting("auto", "training device: auto | cpu | cuda")
    cpus_per_trial: float = _setting(1.0, "CPUs reserved per trial (fractions pack trials per core)")
    gpus_per_trial: float | None = _setting(None, "GPU share per trial (default min(1, GPUs / concurrency) "
                                                  "when training on CUDA)")
    worker_trials: int = _setting(0, "trials a reused Ray worker's trainer process runs before a fresh one "
                                     "replaces it, bounding the worker's host memory (0: trials train in the "
                                     "worker itself, never replaced)")
    trials_per_gpu: int | None = _setting(None, "most trials packed on one GPU (default: as many of the space's "
                                                "largest candidate as fit in the GPU's memory, at most 16)")
    constraints: Constraints = field(default_factory=Constraints)
    objectives: tuple[str, ...] = _setting(DEFAULT_OBJECTIVES, "comma list of " + ", ".join(OBJECTIVES)
                                           + "; accuracy is always one; a resumed run keeps its own")
    accuracy_noise: float = _setting(ACCURACY_NOISE_POINTS, "accuracy differences up to this many points are "
                                            "ties on the front (measured brief-training noise; at least the "
                                            "binomial noise of the validation size; 0: exact)")
    # None: onnxruntime where it runs (cpu, float32), else torch; see README "Latency where the model ships"
    latency_backend: str | None = _setting(None, "how latency is measured: onnxruntime (the exported ONNX, as "
                                                 "`cspnas export` writes it) | torch (eager) (default onnxruntime "
                                                 "on a cpu float32 latency, else torch)")
    latency_precision: str = _setting(LatencySettings.precision, "fp32 | int8 (ONNX Runtime static QDQ quantization "
                                                                 "calibrated on training images; onnxruntime only)")
    latency_device: str = _setting(LatencySettings.device, "device latency is measured on")
    latency_batch_size: int = _setting(LatencySettings.batch_size, "batch size of the latency measurement")
    latency_threads: int = _setting(LatencySettings.threads, "CPU threads of the latency measurement")
    latency_statistic: str = _setting(LatencySettings.statistic, "what a candidate's per-call times are summarized "
                                      "by: " + " | ".join(STATISTICS) + " (min: the model's own cost, without other "
                                      "tenants' bursts, see README \"Latency where the model ships\")")
    latency_dtype: str = _setting(LatencySettings.dtype, "float32 | bfloat16 | float16 (cuda)")
    latency_input_size: int | None = _setting(None, "input side of the latency measurement "
                                                    "(default: the training image size)")
    latency_model: str | None = _setting(None, "a latency model (`cspnas latency fit`): latency is predicted from "
                                               "the architecture, for the model's device, not measured here")
    confirm_latency: bool = _setting(False, "with --latency-model: time front members and candidates near "
                                            "--target-latency on this machine (the model's device); measured wins")
    # shorter than LatencySettings' 0.2 s: every candidate is timed while all training waits
    latency_min_run_time_s: float = _setting(0.1, "timing budget per candidate, in seconds")
    image_size: int | None = _setting(None, "train and measure at N x N pixels, images resized once at load "
                                            "(default: the data set's own size)")
    keep_weights: str = _setting("front", "front | all | none: whose trained weights are kept")
    finalists: int | None = _setting(None, "after the trials, retrain K front members (the knee first, then spread "
                                           "along the front) for --final-epochs each and put the front on their "
                                           "final accuracy (cspnas finalize does it for a finished run)")
    final_epochs: int = _setting(30, "training epochs of each finalist (same data split, seed and recipe as the "
                                     "brief training)")
    address: str | None = _setting(None, "join an existing Ray cluster (e.g. 10.0.0.5:6379)")
    latency_node: str | None = _setting(None, "measure latency on the cluster node advertising this Ray resource "
                                              "(ray start --resources '{\"NAME\": 1}'); no trial trains there")

    def __post_init__(self) -> None:
        # one seed and one device for the whole search: the trials' recipe follows them
        object.__setattr__(self, "train", replace(self.train, seed=self.seed, device=self.device))
        check_evaluator(self.evaluator)
        if self.latency_backend is None:
            shippable = self.latency_device == "cpu" and self.latency_dtype == "float32"
            object.__setattr__(self, "latency_backend", "onnxruntime" if shippable else "torch")
        check_latency_backend(self.latency_backend)
        checks = [
            (self.latency_precision in PRECISIONS,
             f"--latency-precision must be one of {', '.join(PRECISIONS)}, got {self.latency_precision!r}"),
            (self.latency_precision != "int8" or self.latency_backend == "onnxruntime",
             "--latency-precision int8 is ONNX Runtime's quantization; add --latency-backend onnxruntime"),
            (self.budget >= 1, f"--budget must be >= 1, got {self.budget}"),
            (self.prefilter_warmup >= 1, f"--prefilter-warmup must be >= 1, got {self.prefilter_warmup}"),
            (self.screen_limit is None or self.screen_limit >= 1, f"--screen-limit must be >= 1, got {self.screen_limit}"),
            (self.concurrency is None or self.concurrency >= 1, f"--concurrency must be >= 1, got {self.concurrency}"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (0 <= self.pareto_margin < 1, f"--pareto-margin must be in [0, 1) (accuracy, 0.02 = 2 points), "
                                          f"got {self.pareto_margin}"),
            (self.keep_weights in ("front", "all", "none"), f"--keep-weights must be front, all or none, got {self.keep_weights!r}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}"),
            (self.worker_trials >= 0, f"--worker-trials must be >= 0 (0: never replace), got {self.worker_trials}"),
            (self.trials_per_gpu is None or self.trials_per_gpu >= 1,
             f"--trials-per-gpu must be >= 1, got {self.trials_per_gpu}"),
            (0 < self.val_fraction < 1, f"--val-fraction must be in (0, 1), got {self.val_fraction}"),
            (self.accuracy_noise is not None and 0 <= self.accuracy_noise < 100,
             f"--accuracy-noise must be points in [0, 100), e.g. 2 (0: exact), got {self.accuracy_noise}"),
            (self.latency_statistic in STATISTICS, f"--latency-statistic must be one of {', '.join(STATISTICS)}, "
                                                   f"got {self.latency_statistic!r}"),
            (self.latency_threads >= 1, f"--latency-threads must be >= 1, got {self.latency_threads}"),
            (self.latency_batch_size >= 1, f"--latency-batch-size must be >= 1, got {self.latency_batch_size}"),
            (self.image_size is None or self.image_size >= 1, f"--image-size must be >= 1, got {self.image_size}"),
            (not self.latency_node or bool(self.address), f"--latency-node {self.latency_node} needs --address: the "
             "node is one of the Ray cluster the search joins"),
            (self.latency_model is not None or not self.confirm_latency,
             "--confirm-latency confirms a --latency-model's predictions; give --latency-model MODEL.json too"),
            (self.finalists is None or self.finalists >= 1, f"--finalists must be >= 1, got {self.finalists}"),
            (self.final_epochs >= 1, f"--final-epochs must be >= 1, got {self.final_epochs}"),
            (self.finalists is None or self.keep_weights != "none", "--finalists with --keep-weights none: the "
             "finalists' trained weights would not be kept; drop --keep-weights none"),
            (bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
             f"--name must be a plain directory name, got {self.name!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CspnasError(message)
        if self.prefilter is not None:
            name, fraction = parse_prefilter(self.prefilter)
            object.__setattr__(self, "prefilter", f"{name}:{fraction:g}")  # one spelling in config.yaml
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))  # also a YAML list

    def prefilter_rule(self) -> tuple[str, float] | None:
        """--prefilter as (score name, fraction), or None."""
        return parse_prefilter(self.prefilter) if self.prefilter is not None else None

    def data_spec(self) -> dict[str, Any]:
        """load_dataset keyword arguments of this search's data (every trial and export load the same)."""
        # absolute: Tune runs each trial in its own working directory (and, on a cluster, another machine)
        data_dir = str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else None
        return {"name": self.dataset, "data_dir": data_dir, "val_fraction": self.val_fraction,
                "split_seed": self.seed, "train_subset": self.train_subset, "download": False,
                "image_size": self.image_size}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constraints"] = asdict(self.constraints)
        d["train"] = {k: v for k, v in asdict(self.train).items() if k not in _FROM_SEARCH}
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSettings":
        d = dict(d)
        # config.yaml of cspnas <= 0.1.0 spelled the trials' training flat
        flat = {k: d.pop(k) for k in _FLAT_TRAIN if k in d}
        train = dict(d.get("train") or {})
        precision = flat.pop("train_precision", None)
        if precision is not None:
            if precision not in TRAIN_PRECISIONS:
                raise CspnasError(f"config.yaml: train_precision must be one of {', '.join(TRAIN_PRECISIONS)}, "
                                  f"got {precision!r}")
            train.update(TRAIN_PRECISIONS[precision])
        train.update(flat)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CspnasError(f"config.yaml: unknown setting(s) {unknown}; was it written by another cspnas version?")
        d.setdefault("latency_backend", "torch")  # runs from before the setting were timed in eager mode
        d.setdefault("latency_statistic", "median")  # runs from before the setting recorded medians
        d.setdefault("accuracy_noise", 0.0)  # runs from before the setting: exact accuracy, as they were made
        d["constraints"] = Constraints(**(d.get("constraints") or {}))
        d["train"] = TrainConfig.from_dict({**asdict(search_training()), **train})
        return cls(**d)


# TrainConfig fields that are the search's own settings, not part of the recipe
_FROM_SEARCH = ("seed", "device")
# the flat keys of cspnas <= 0.1.0's config.yaml and where they live now (train_precision: bf16 + channels_last)
_FLAT_TRAIN = ("epochs", "batch_size", "lr", "train_precision")
