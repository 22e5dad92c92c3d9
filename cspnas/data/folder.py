"""Image folders in the ImageFolder layout: <dir>/train/<class>/*.jpg, optional <dir>/test/<class>/."""
from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cspnas.data.images import RawData
from cspnas.data.sources import Source
from cspnas.errors import CspnasError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
LAYOUT_HINT = "arrange images as <dir>/train/<class>/*.jpg|png (and optionally <dir>/test/<class>/)"


def _entries(folder: Path, kind: str) -> list[os.DirEntry]:
    """The entries of ``folder`` that are (or link to) a 'dir' or a 'file'. scandir, not
    Path.iterdir: its entries know their type without a stat per file. A link that cannot be
    followed (a symlink loop) is named, not skipped: it is a mistake in the tree."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                try:
                    if e.is_dir() if kind == "dir" else e.is_file():
                        found.append(e)
                except OSError as exc:
                    raise CspnasError(f"{e.path}: cannot follow it ({exc.strerror}: a symbolic link loop?); "
                                      "remove or fix that link") from None
    except OSError as exc:
        raise CspnasError(f"cannot list {folder} ({exc.strerror}); make it readable or remove it") from None
    return found


def _scan(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, for every class sub-folder of ``split_dir``."""
    classes = sorted(Path(e.path) for e in _entries(split_dir, "dir") if not e.name.startswith("."))
    found = {}
    for class_dir in classes:
        names = sorted(e.name for e in _entries(class_dir, "file")
                       if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        images = [class_dir / name for name in names]
        if not images:
            raise CspnasError(f"{class_dir} has no images ({'/'.join(IMAGE_SUFFIXES)}); "
                              "add some or remove the folder")
        found[class_dir.name] = images
    return found


def _test_dir(root: Path) -> Path | None:
    """The held-out test split: test/ if present, else val/ (ImageNet names its test split val)."""
    test, val = root / "test", root / "val"
    if test.is_dir() and val.is_dir():
        log.info("%s has both test/ and val/; using test/ as the test set and ignoring val/", root)
    return test if test.is_dir() else val if val.is_dir() else None


def folder_source(data_dir: str | Path | None) -> Source:
    if data_dir is None:
        raise CspnasError(f"the folder data set needs a data directory; {LAYOUT_HINT}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise CspnasError(f"data folder {root} does not exist; {LAYOUT_HINT}")
    if not (root / "train").is_dir():
        raise CspnasError(f"{root} has no train/ folder; {LAYOUT_HINT}")
    train = _scan(root / "train")
    if len(train) < 2:
        raise CspnasError(f"{root / 'train'} has {len(train)} class folder(s), need at least 2; {LAYOUT_HINT}")
    test_dir = _test_dir(root)
    test = _scan(test_dir) if test_dir is not None else None
    if test is not None and set(test) != set(train):
        missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise CspnasError(f"class folders of {test_dir} differ from {root / 'train'} (missing: {missing}, "
                          f"extra: {extra}); use the same class folder names in both")
    files = [p for images in train.values() for p in images]
    if test is not None:
        files += [p for images in test.values() for p in images]
    return Source("folder", root, tuple(files), lambda: decode_folder(train, test))


def _read(path: Path) -> np.ndarray:
    """Decode one file to HxW (greyscale) or HxWx3 (colour) uint8."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse both before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return np.asarray(im.convert("L" if im.mode in GREY_MODES else "RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CspnasError(f"image {path} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression "
                          "bomb, or far too large to train on); shrink or remove it") from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CspnasError(f"cannot decode image {path} ({exc}); remove or replace it") from exc


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """One uint8 [N, C, H, W] tensor: greyscale only if every image is, common size enforced."""
    sizes = Counter(a.shape[:2] for a in arrays)
    (h, w), _ = sizes.most_common(1)[0]
    odd = sum(n for size, n in sizes.items() if size != (h, w))
    if odd:
        log.info("resizing %d of %d images to %dx%d (the most common size)", odd, len(arrays), w, h)
    channels = 1 if all(a.ndim == 2 for a in arrays) else 3
    out = np.empty((len(arrays), h, w, channels), dtype=np.uint8)
    for i, a in enumerate(arrays):
        if a.shape[:2] != (h, w):
            a = np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))
        out[i] = a[..., None] if a.ndim == 2 else a  # a grey image among colour ones is broadcast to RGB
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode_folder(train: dict[str, list[Path]], test: dict[str, list[Path]] | None) -> RawData:
    classes = tuple(train)  # sorted folder names; the test split maps onto the same indices
    index = {name: i for i, name in enumerate(classes)}

    def flatten(split: dict[str, list[Path]]) -> tuple[list[Path], torch.Tensor]:
        paths = [p for name in classes for p in split[name]]
        labels = torch.tensor([index[name] for name in classes for _ in split[name]], dtype=torch.int64)
        return paths, labels

    train_paths, train_y = flatten(train)
    arrays = [_read(p) for p in train_paths]
    n_train = len(arrays)
    test_y = None
    if test is not None:
        test_paths, test_y = flatten(test)
        arrays += [_read(p) for p in test_paths]
    # Stack both splits together so they share one size and channel count; clone so each split
    # owns its storage (safetensors refuses to save tensors that share memory).
    x = _stack(arrays)
    test_x = x[n_train:].clone() if test is not None else None
    return RawData(x[:n_train].clone(), train_y, test_x, test_y, classes)
