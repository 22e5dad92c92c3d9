"""Per-epoch training checkpoints: a dict of tensors and primitives, loaded with weights_only=True."""
from __future__ import annotations

import io
import pickle  # only for its exception type: loading uses weights_only=True
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from cspnas.errors import CspnasError
from cspnas.fsutil import write_atomic, writing

FORMAT = 1


@dataclass
class History:
    """Per-epoch records, kept across resumes."""

    val_acc: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # whole epoch, evaluation included
    train_seconds: list[float] = field(default_factory=list)  # training steps only
    images: list[int] = field(default_factory=list)


def save_checkpoint(path: Path, *, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, history: History) -> None:
    """Atomic (write_atomic), so a kill mid-write leaves the previous checkpoint intact."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": generator.get_state(), "history": asdict(history)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's state_dict as safetensors, atomically (trial weights, trained weights)."""
    from safetensors.torch import save

    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}))


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, device: torch.device) -> tuple[int, History]:
    """Restore model, optimizer and RNG in place; return (epochs already done, their history)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, whatever the device
        history = History(**state["history"])
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise CspnasError(f"cannot resume from checkpoint {path} ({str(exc).splitlines()[0]}); "
                          "it belongs to another model or run: delete it or pick another path") from exc
    return int(state["epoch"]), history
