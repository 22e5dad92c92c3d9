"""Training settings and the device they resolve to."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from cspnas.errors import CspnasError

if TYPE_CHECKING:
    import torch


# TrainConfig.cuda_step: how a training step runs on CUDA (cspnas.train.loop.DeviceStep; which one pays
# for brief trainings, per model size, is measured by experiments/gpu_check.py)
CUDA_STEPS = ("eager", "graph", "compile")


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum, label smoothing, and a per-batch linear warmup then linear decay to 0.

    ``lr`` is the peak rate and is used as given for any ``batch_size`` (no implicit scaling).
    ``bf16``, ``channels_last`` and ``cuda_step`` only take effect on CUDA. ``crop_pad=None`` picks the crop
    padding from the input size: 1 px for 8x8 digits up to 4 px for 32 px and larger images.
    """

    epochs: int = field(default=5, metadata={"help": "training epochs (the LR schedule spans all of them)"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    lr: float = field(default=0.2, metadata={"help": "peak learning rate"})
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5
    seed: int = field(default=0, metadata={"help": "seed of the initial weights, data order and augmentation"})
    device: str = "cpu"
    bf16: bool = True
    channels_last: bool = True
    eval_batch_size: int = 512
    crop_pad: int | None = None
    cuda_step: str = field(default="eager", metadata={
        "help": "how a training step runs on CUDA: eager | graph (one CUDA graph per step) | compile (torch.compile)"})

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (not self.nesterov or self.momentum > 0, "nesterov needs momentum > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.crop_pad is None or self.crop_pad >= 0, "crop_pad must be >= 0 or None"),
            (self.cuda_step in CUDA_STEPS,
             f"--cuda-step must be one of {', '.join(CUDA_STEPS)}, got {self.cuda_step!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CspnasError(f"invalid training config: {message}")

    def crop_padding(self, input_size: int) -> int:
        if self.crop_pad is not None:
            return self.crop_pad
        return min(4, max(1, input_size // 8))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from e.g. a YAML section, rejecting unknown keys with a one-line hint."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CspnasError(f"unknown training setting(s) {unknown}; valid ones are {sorted(known)}")
        return cls(**values)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda'/'cuda:N' must actually be available."""
    import torch  # here, not at the top: the CLI reads TrainConfig's defaults without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CspnasError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CspnasError(f"device {name!r} requested but no CUDA GPU is available; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CspnasError(f"device {name!r} does not exist (found {torch.cuda.device_count()} GPU(s))")
    elif device.type != "cpu":
        raise CspnasError(f"unsupported device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return device
