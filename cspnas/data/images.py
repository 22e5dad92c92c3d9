"""The in-memory image data set every other part of cspnas trains and evaluates on."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from cspnas.errors import CspnasError


# eq=False: comparing tensors with == is ambiguous, and identity is what callers need.
@dataclass(frozen=True, eq=False)
class ImageData:
    """Images as uint8 [N, C, H, W] tensors with int64 labels, split three ways.

    ``val_*`` is a held-out part of the *training* data (the search scores on it);
    ``test_*`` is the official test set when the source has one, and the search never reads it.
    ``mean``/``std`` are per-channel statistics of ``train_x`` on the 0..1 scale.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool

    def __post_init__(self) -> None:
        splits = [("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)]
        if (self.test_x is None) != (self.test_y is None):
            raise ValueError("test_x and test_y must both be set or both be None")
        if self.test_x is not None:
            splits.append(("test", self.test_x, self.test_y))
        shape = tuple(self.train_x.shape[1:])
        for split, x, y in splits:
            if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
                raise ValueError(f"{split}_x must be uint8 [N, {', '.join(map(str, shape))}], "
                                 f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{split}_y must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}")
        if len(self.mean) != shape[0] or len(self.std) != shape[0]:
            raise ValueError(f"mean/std need one value per channel ({shape[0]})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chs(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.train_x.shape[2])

    def to(self, device: torch.device | str) -> ImageData:
        """The same data with every tensor on ``device`` (still uint8, so 4x smaller than float)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y),
                       val_x=move(self.val_x), val_y=move(self.val_y),
                       test_x=move(self.test_x), test_y=move(self.test_y))

    def summary(self) -> dict:
        """Sizes and statistics as plain JSON-able values, for logs and saved configs."""
        return {
            "name": self.name,
            "train": int(self.train_x.shape[0]),
            "val": int(self.val_x.shape[0]),
            "test": None if self.test_x is None else int(self.test_x.shape[0]),
            "num_classes": self.num_classes,
            "input_shape": [int(s) for s in self.train_x.shape[1:]],
            "mean": [round(m, 4) for m in self.mean],
            "std": [round(s, 4) for s in self.std],
            "hflip": self.hflip,
        }


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale.

    Counts the 256 possible values per channel instead of converting to float: exact, and it
    never builds a 600 MB float copy of 50k CIFAR images.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = ((counts * values * values).sum() / n - mean * mean).clamp_min(0.0)
        means.append(float(mean) / 255.0)
        # A constant channel would divide by zero when normalising; one grey level is a safe floor.
        stds.append(max(float(var.sqrt()), 1.0) / 255.0)
    return tuple(means), tuple(stds)


@dataclass(frozen=True, eq=False)
class RawData:
    """A source's decoded images before the train/val split: what the decode cache stores."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x is not None and y is not None and len(x) != len(y):
                raise CspnasError(f"the {split} files hold {len(x)} images but {len(y)} labels; "
                                  "they are corrupt or from different data sets, re-download them")
        labels = [self.train_y] + ([self.test_y] if self.test_y is not None else [])
        top = max((int(y.max()) for y in labels if len(y)), default=-1)
        if top >= len(self.classes):
            raise CspnasError(f"decoded labels go up to {top} but there are only {len(self.classes)} "
                              "classes; the data files are corrupt or belong to another data set")

    def resized(self, size: int) -> RawData:
        """Every image at size x size: area averaging when shrinking (each output pixel is the mean
        of the input pixels it covers), bilinear when enlarging; uint8 again, rounded."""
        return replace(self, train_x=resize_images(self.train_x, size),
                       test_x=None if self.test_x is None else resize_images(self.test_x, size))


def resize_images(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size], `chunk` images at a time (bounded memory)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    out = [torch.nn.functional.interpolate(part.float(), size=(size, size),
                                           mode="area" if shrink else "bilinear",
                                           **({} if shrink else {"align_corners": False}))
           .round_().clamp_(0, 255).to(torch.uint8)
           for part in x.split(chunk)]
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], size, size))
