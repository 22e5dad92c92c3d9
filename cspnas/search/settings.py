"""Search settings: everything needed to rerun a search, recorded as the run's config.yaml."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cspnas.errors import CspnasError
from cspnas.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, check_limits, parse_objectives

SAMPLERS = ("tpe", "nsga2", "random", "qmc")
SCHEDULERS = ("none", "asha")
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


@dataclass(frozen=True)
class SearchSettings:
    name: str
    results_dir: str = "results"
    space: str = "default"
    dataset: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.1
    train_subset: int | None = None
    budget: int = 50
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.2
    concurrency: int = 2
    sampler: str = "tpe"
    scheduler: str = "none"
    seed: int = 0
    device: str = "auto"  # training device
    # fp32 (cuDNN may use TF32): on an H100 the brief proxy trainings ran 0.75-0.94x as fast with
    # bf16 autocast + channels_last (results/benchmarks/gpu_check.json, gpu_precision_32px.json).
    # No effect on the CPU.
    train_precision: str = "fp32"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 / concurrency when training on CUDA
    constraints: Constraints = field(default_factory=Constraints)
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # see cspnas.objectives; accuracy is always one
    latency_device: str = "cpu"
    latency_batch_size: int = 1
    latency_threads: int = 1
    latency_dtype: str = "float32"
    latency_input_size: int | None = None  # None: the data set's image size
    latency_min_run_time_s: float = 0.1
    keep_weights: str = "front"  # front | all | none
    address: str | None = None  # join an existing Ray cluster instead of starting a local one

    def __post_init__(self) -> None:
        checks = [
            (self.budget >= 1, f"--budget must be >= 1, got {self.budget}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.concurrency >= 1, f"--concurrency must be >= 1, got {self.concurrency}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.sampler in SAMPLERS, f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.train_precision in TRAIN_PRECISIONS,
             f"--train-precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.train_precision!r}"),
            (self.keep_weights in ("front", "all", "none"), f"--keep-weights must be front, all or none, got {self.keep_weights!r}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}"),
            (0 < self.val_fraction < 1, f"--val-fraction must be in (0, 1), got {self.val_fraction}"),
            (self.latency_threads >= 1, f"--latency-threads must be >= 1, got {self.latency_threads}"),
            (self.latency_batch_size >= 1, f"--latency-batch-size must be >= 1, got {self.latency_batch_size}"),
            (bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
             f"--name must be a plain directory name, got {self.name!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CspnasError(message)
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))  # also a YAML list

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constraints"] = asdict(self.constraints)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CspnasError(f"config.yaml: unknown setting(s) {unknown}; was it written by another cspnas version?")
        d = dict(d)
        d["constraints"] = Constraints(**(d.get("constraints") or {}))
        return cls(**d)
