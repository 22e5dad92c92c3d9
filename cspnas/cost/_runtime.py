"""Shared plumbing for measurements: eval mode, thread count, the deployed model copy."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cspnas.cost.settings import LatencySettings
from cspnas.errors import CspnasError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards.

    Per-module restore matters: ``model.train(flag)`` would overwrite submodules that were
    deliberately frozen in eval mode (e.g. frozen BN in fine-tuning).
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in flags:
            m.training = was_training


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def deployed_copy(model: nn.Module, settings: LatencySettings) -> tuple[nn.Module, torch.Tensor]:
    """A deep copy of ``model`` cast/moved as ``settings`` says, plus a matching random input.

    Working on a copy leaves the caller's model (device, dtype, train flag) untouched.
    """
    device = settings.torch_device()
    try:
        clone = copy.deepcopy(model)
    except Exception as e:  # deepcopy failures come as many exception types
        raise CspnasError(f"model cannot be deep-copied for measurement ({e}); make its modules copyable") from e
    clone = clone.eval().to(device=device, dtype=settings.torch_dtype)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    clone = clone.to(memory_format=memory_format)
    # Fixed seed: the input values do not change conv timings, but a fixed one keeps runs repeatable.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(settings.input_shape, generator=generator).to(device=device, dtype=settings.torch_dtype)
    return clone, x.contiguous(memory_format=memory_format)


def first_line(error: BaseException) -> str:
    """The first line of an exception message, for one-line user-facing errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
