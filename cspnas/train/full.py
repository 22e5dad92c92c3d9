"""Train one architecture to the end into a directory (arch.json, weights, metrics), resumable per epoch.

The directory holds: settings.json (written first, so --resume can check it is the same job),
arch.json, checkpoint.pt (after every epoch, by the training engine), and at the end
weights.safetensors and metrics.json. Every file is replaced atomically.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cspnas.errors import CspnasError
from cspnas.train.config import TrainConfig

SETTINGS, ARCH, CHECKPOINT, WEIGHTS, METRICS = ("settings.json", "arch.json", "checkpoint.pt",
                                                "weights.safetensors", "metrics.json")


@dataclass(frozen=True)
class FullTrainSettings:
    """What makes two invocations the same training job (compared on --resume); the recipe's
    defaults are TrainConfig's."""

    dataset: str
    epochs: int
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    seed: int = TrainConfig.seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FullTrainResult:
    out: Path
    metrics: dict[str, Any]


def train_full(arch_source: str | Path, out: str | Path, settings: FullTrainSettings, *,
               data_dir: str | Path | None = None, device: str = "auto", resume: bool = False,
               on_epoch: Callable | None = None) -> FullTrainResult:
    """Train `arch_source` (ARCH.json or preset) on `settings.dataset`, evaluate on its test split, write `out`.

    The architecture's num_classes/in_chs are replaced by the data set's. Without `resume`,
    `out` must be new or empty; with it, `out` must hold a checkpoint of the same job.
    """
    from cspnas.cost import count_macs, count_params
    from cspnas.data import load_dataset
    from cspnas.models import build_model, load_arch
    from cspnas.train import TrainConfig, TrainingDiverged, evaluate, resolve_device, train

    out = Path(out).expanduser()
    arch = load_arch(arch_source)  # before anything touches `out`: a bad arch writes nothing
    _check_out(out, settings, resume)
    cfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed,
                      device=str(resolve_device(device)))
    data = load_dataset(settings.dataset, data_dir)
    arch = arch.with_io(in_chs=data.in_chs, num_classes=data.num_classes)
    if resume:
        saved = _read_json(out / ARCH)
        if saved.get("stages") and load_arch(saved).arch_hash() != arch.arch_hash():
            raise CspnasError(f"{out / ARCH} is another architecture than {arch_source}; resume with the same "
                              "ARCH.json or start a new --out")
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CspnasError(f"cannot create --out {out} ({e.strerror}); choose a writable directory") from None
        _write_text(out / SETTINGS, json.dumps(settings.to_dict(), indent=2) + "\n")
        _write_text(out / ARCH, arch.to_json() + "\n")

    torch.manual_seed(settings.seed)  # the engine seeds data order; the initial weights are ours to seed
    model = build_model(arch)
    try:
        result = train(model, data, cfg, on_epoch=on_epoch, checkpoint_path=out / CHECKPOINT, eval_on="val")
    except TrainingDiverged as e:
        raise CspnasError(f"{e}; pass a lower --lr (now {settings.lr:g})") from None
    test_acc = None
    if data.test_x is not None:
        test_acc = evaluate(model, data.test_x, data.test_y, mean=data.mean, std=data.std,
                            batch_size=cfg.eval_batch_size, bf16=cfg.bf16)
    model = model.cpu().eval()
    metrics = {
        "arch_hash": arch.arch_hash(), "arch_summary": arch.summary(), "dataset": settings.dataset,
        "epochs": settings.epochs, "epochs_done": result.epochs_done, "test_acc": test_acc,
        "final_val_acc": result.final_val_acc, "val_acc_per_epoch": list(result.val_acc),
        "train_loss_per_epoch": list(result.train_loss), "params": count_params(model),
        "macs": count_macs(model, in_chs=data.in_chs, input_size=data.input_size).total,
        "input_shape": [1, data.in_chs, data.input_size, data.input_size],
        "mean": list(data.mean), "std": list(data.std),
        "train_seconds": result.seconds, "images_per_s": result.images_per_s, "device": cfg.device,
        "settings": settings.to_dict(), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_weights(out / WEIGHTS, model)
    _write_text(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    return FullTrainResult(out=out, metrics=metrics)


def _check_out(out: Path, settings: FullTrainSettings, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CspnasError(f"--out {out} is a file; pass a directory")
    if not resume:
        if out.is_dir() and any(out.iterdir()):
            hint = "pass --resume to continue it" if (out / CHECKPOINT).is_file() else "nothing was overwritten"
            raise CspnasError(f"--out {out} already exists and is not empty ({hint}); or choose another --out")
        return
    if not (out / CHECKPOINT).is_file():
        raise CspnasError(f"--resume: no {CHECKPOINT} in {out}; drop --resume to start training there")
    saved = _read_json(out / SETTINGS)
    for key, value in settings.to_dict().items():
        if key in saved and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            raise CspnasError(f"--resume: {flag} {value} differs from the {saved[key]} this training started with; "
                              f"resume with {flag} {saved[key]} or start a new --out")


def saved_settings(out: str | Path) -> dict[str, Any]:
    """settings.json of a training directory ({} when absent), so a resume can default to it."""
    path = Path(out).expanduser() / SETTINGS
    return _read_json(path) if path.is_file() else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise CspnasError(f"{path}: unreadable ({e}); start a new --out") from None
    return data if isinstance(data, dict) else {}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_weights(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
