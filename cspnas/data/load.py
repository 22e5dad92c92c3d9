"""load_dataset: locate, decode (or read from cache), split and describe a data set."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from cspnas.data.cache import cache_path, fingerprint, load_cached, save_cached
from cspnas.data.folder import folder_source
from cspnas.data.images import ImageData, RawData, channel_stats
from cspnas.data.sources import Source, cifar_source, decode_digits, default_cache_dir, default_data_dir, idx_source
from cspnas.data.splits import stratified_split, stratified_subset
from cspnas.errors import CspnasError

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "folder")

# Mirror images are still valid examples of the class, except for handwritten digits.
HFLIP = {"digits": False, "mnist": False, "cifar10": True, "cifar100": True, "fashion-mnist": True, "folder": True}


def find_source(name: str, data_dir: Path | None, download: bool) -> Source:
    """Locate (and if allowed, download) the files of data set ``name``."""
    if name == "digits":
        return Source(name, None, (), decode_digits)
    if name == "folder":
        return folder_source(data_dir)
    data_dir = data_dir if data_dir is not None else default_data_dir(name)
    if name in ("cifar10", "cifar100"):
        return cifar_source(name, data_dir, download)
    return idx_source(name, data_dir, download)


def _decode(source: Source, cache_dir: Path, image_size: int | None = None) -> RawData:
    """Decoded images (at image_size x image_size when given), from the cache when it is current.
    A resized copy is cached on its own, so each size is decoded and resized once."""
    if source.location is None:
        raw = source.decode()
        return raw if image_size is None else raw.resized(image_size)
    fp = fingerprint(source) + ("" if image_size is None else f"|{image_size}px")
    path = cache_path(cache_dir, source, image_size)
    raw = load_cached(path, fp)
    if raw is not None:
        log.info("loaded %s from cache %s", source.name, path)
        return raw
    start = time.perf_counter()
    raw = source.decode() if image_size is None else _decode(source, cache_dir).resized(image_size)
    log.info("decoded %s from %s in %.1f s", source.name, source.location, time.perf_counter() - start)
    try:
        save_cached(path, fp, raw)
        log.info("cached decoded %s to %s", source.name, path)
    except CspnasError as exc:  # a read-only or full cache dir should not stop training
        log.warning("not caching the decoded data (%s); pass a writable cache_dir to skip decoding next time", exc)
    return raw


def load_dataset(name: str, data_dir: str | Path | None = None, *, val_fraction: float = 0.1,
                 split_seed: int = 0, cache_dir: str | Path | None = None,
                 train_subset: int | None = None, download: bool = True,
                 image_size: int | None = None) -> ImageData:
    """Load data set ``name`` onto the CPU as uint8 tensors.

    ``val_fraction`` of the training data (stratified, chosen by ``split_seed``) becomes the
    validation split that the search scores on; the official test set, if any, is kept apart.
    ``train_subset`` then keeps a stratified random subset of that many training images (the
    validation split is unaffected), for quick CPU experiments. ``image_size`` resizes every
    image to image_size x image_size once, at load (area averaging when shrinking), and caches it.
    """
    if name not in DATASETS:
        raise CspnasError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise CspnasError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    source = find_source(name, Path(data_dir).expanduser() if data_dir is not None else None, download)
    if image_size is not None and image_size < 1:
        raise CspnasError(f"--image-size must be >= 1, got {image_size}")
    raw = _decode(source, Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
                  image_size)

    train_idx, val_idx = stratified_split(raw.train_y, val_fraction, split_seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise CspnasError(f"{name} has {len(raw.train_y)} training images, too few to hold out "
                          f"val_fraction={val_fraction}; add images or change val_fraction")
    if train_subset is not None:
        if not 0 < train_subset <= len(train_idx):
            raise CspnasError(f"train_subset={train_subset} must be between 1 and the {len(train_idx)} "
                              f"training images of {name} left after the validation split")
        # A different seed than the split's, so the subset is not a function of the val choice.
        train_idx = train_idx[stratified_subset(raw.train_y[train_idx], train_subset, split_seed + 1)]
    train_x = raw.train_x[train_idx]
    mean, std = channel_stats(train_x)
    return ImageData(name=name, train_x=train_x, train_y=raw.train_y[train_idx],
                     val_x=raw.train_x[val_idx], val_y=raw.train_y[val_idx],
                     test_x=raw.test_x, test_y=raw.test_y, classes=raw.classes,
                     mean=mean, std=std, hflip=HFLIP[name])
