"""Train one architecture to the end into a directory (arch.json, weights, metrics), resumable per epoch.

The directory holds: settings.json (written first, so --resume can check it is the same job),
arch.json, checkpoint.pt (after every epoch, by the training engine), and at the end
weights.safetensors and metrics.json. Every file is replaced atomically. A new training is
built in the hidden sibling `.<out>.partial` and renamed to `out` when it finishes, so a failed
one leaves no `out`; an interrupted one (Ctrl-C, a full disk) keeps `.<out>.partial` for --resume.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cspnas.errors import CspnasError, DiskFullError
from cspnas.fsutil import check_writable_dir, staged_dir, write_atomic
from cspnas.train.checkpoint import save_weights
from cspnas.train.config import TrainConfig

if TYPE_CHECKING:
    from cspnas.data import ImageData

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
               on_epoch: Callable | None = None, recipe: TrainConfig | None = None, data: ImageData | None = None,
               step_hook: Callable[[], None] | None = None) -> FullTrainResult:
    """Train `arch_source` (ARCH.json, preset or ArchConfig) on `settings.dataset`, evaluate on its test split,
    write `out`.

    The architecture's num_classes/in_chs are replaced by the data set's. Without `resume`,
    `out` must be new or empty; with it, `out` (or the `.<out>.partial` an interrupted training
    kept) must hold a checkpoint of the same job. `recipe`: the rest of the training recipe (default
    TrainConfig's; `settings` sets its epochs, batch size, lr and seed); `data`: the data already loaded
    (e.g. a search's split; default: `settings.dataset` from `data_dir`); `step_hook` runs between steps
    (raise from it to stop: the finished epochs stay resumable).
    """
    from cspnas.data import load_dataset
    from cspnas.models import load_arch
    from cspnas.space.footprint import ensure_fits, footprint
    from cspnas.train import resolve_device

    out = Path(out).expanduser()
    arch = load_arch(arch_source)  # before anything touches `out`: a bad arch writes nothing
    work = _work_dir(out, settings, resume)
    cfg = replace(recipe or TrainConfig(), epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                  seed=settings.seed, device=str(resolve_device(device)))
    data = data if data is not None else load_dataset(settings.dataset, data_dir)
    arch = arch.with_io(in_chs=data.in_chs, num_classes=data.num_classes)
    ensure_fits(footprint(arch, data.input_size).training_bytes(settings.batch_size), cfg.device,
                f"training {arch_source} on {data.input_size}x{data.input_size} images in batches of "
                f"{settings.batch_size}", "pass a smaller --batch-size or a smaller architecture")
    if resume:
        saved = _read_json(work / ARCH)
        if saved.get("stages") and load_arch(saved).arch_hash() != arch.arch_hash():
            raise CspnasError(f"{work / ARCH} is another architecture than {arch_source}; resume with the same "
                              "ARCH.json or start a new --out")
    elif work.exists():
        shutil.rmtree(work)  # a leftover of a training killed before its first checkpoint

    try:
        # a resumed finished training is updated in place; any other appears at `out` only when complete
        with (staged_dir(out, work) if work != out else nullcontext()):
            if not resume:
                write_atomic(work / SETTINGS, json.dumps(settings.to_dict(), indent=2) + "\n")
                write_atomic(work / ARCH, arch.to_json() + "\n")
            metrics = _train_and_test(arch, data, cfg, settings, work, on_epoch, step_hook)
    except BaseException as e:
        if work != out and not _resumable(e, work):
            shutil.rmtree(work, ignore_errors=True)
        raise
    return FullTrainResult(out=out, metrics=metrics)


def _train_and_test(arch, data, cfg, settings: FullTrainSettings, work: Path, on_epoch,
                    step_hook=None) -> dict[str, Any]:
    from cspnas.cost import count_macs, count_params
    from cspnas.models import build_model
    from cspnas.train import TrainingDiverged, evaluate, train

    torch.manual_seed(settings.seed)  # the engine seeds data order; the initial weights are ours to seed
    model = build_model(arch)
    try:
        result = train(model, data, cfg, on_epoch=on_epoch, checkpoint_path=work / CHECKPOINT, eval_on="val",
                       step_hook=step_hook)
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
    save_weights(model, work / WEIGHTS)
    write_atomic(work / METRICS, json.dumps(metrics, indent=2) + "\n")
    return metrics


def partial_dir(out: Path) -> Path:
    """Where a training into `out` lives until it finishes (a hidden sibling), and where an
    interrupted one keeps its checkpoint for --resume."""
    out = Path(out).expanduser()
    return out.with_name(f".{out.name}.partial")


def _resumable(e: BaseException, work: Path) -> bool:
    """Keep an unfinished training's folder only when --resume can continue it: the user stopped it
    (Ctrl-C, a signal turned into SystemExit) or the disk filled up, after at least one epoch."""
    return isinstance(e, (KeyboardInterrupt, SystemExit, DiskFullError)) and (work / CHECKPOINT).is_file()


def _work_dir(out: Path, settings: FullTrainSettings, resume: bool) -> Path:
    """The folder to train in, after refusing what would overwrite or mix up a training."""
    partial = partial_dir(out)
    if out.exists() and not out.is_dir():
        raise CspnasError(f"--out {out} is a file; pass a directory")
    if not resume:
        if out.is_dir() and any(out.iterdir()):
            hint = "pass --resume to continue it" if (out / CHECKPOINT).is_file() else "nothing was overwritten"
            raise CspnasError(f"--out {out} already exists and is not empty ({hint}); or choose another --out")
        if (partial / CHECKPOINT).is_file():
            raise CspnasError(f"--out {out}: an interrupted training of it is kept in {partial}; pass --resume to "
                              f"continue it, or delete {partial} to start over")
        check_writable_dir(out.parent, f"--out {out}")
        return partial
    work = partial if (partial / CHECKPOINT).is_file() else out
    if not (work / CHECKPOINT).is_file():
        raise CspnasError(f"--resume: no {CHECKPOINT} in {out}; drop --resume to start training there")
    if work == partial and out.is_dir() and any(out.iterdir()):
        raise CspnasError(f"--resume: {out} appeared while the training in {partial} was interrupted; move {out} "
                          "away and resume again")
    saved = _read_json(work / SETTINGS)
    for key, value in settings.to_dict().items():
        if key in saved and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            raise CspnasError(f"--resume: {flag} {value} differs from the {saved[key]} this training started with; "
                              f"resume with {flag} {saved[key]} or start a new --out")
    return work


def saved_settings(out: str | Path) -> dict[str, Any]:
    """settings.json of a training directory ({} when absent), so a resume can default to it."""
    for folder in (partial_dir(out), Path(out).expanduser()):
        if (folder / SETTINGS).is_file():
            return _read_json(folder / SETTINGS)
    return {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise CspnasError(f"{path}: unreadable ({e}); start a new --out") from None
    return data if isinstance(data, dict) else {}
