"""Where each data set's files live and how to decode them into a RawData."""
from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cspnas.data.download import fetch
from cspnas.data.formats import idx_images, idx_labels, parse_cifar_bin
from cspnas.data.images import RawData
from cspnas.data.splits import stratified_split
from cspnas.errors import CspnasError


@dataclass(frozen=True)
class Source:
    """A located data set: the files that define it (for the cache key) and how to decode them."""

    name: str
    location: Path | None  # None: bundled with a library, cheap to load, not worth caching
    files: tuple[Path, ...]
    decode: Callable[[], RawData]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CSPNAS_CACHE_DIR", "~/.cache/cspnas")).expanduser()


def default_data_dir(name: str) -> Path:
    # One folder per data set: MNIST and Fashion-MNIST use identical file names.
    return default_cache_dir() / "data" / name


# --- digits (scikit-learn, bundled) -------------------------------------------------------

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0  # fixed, so the test set never depends on the user's split_seed


def decode_digits() -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    keep, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    return RawData(x[keep], y[keep], x[test], y[test], tuple(str(i) for i in range(10)))


# --- CIFAR-10 / CIFAR-100 binary version --------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class CifarSpec:
    archive: str
    url: str
    folder: str  # what the archive extracts to
    train: tuple[str, ...]
    test: str
    label_bytes: int
    names_file: str
    fallback_classes: tuple[str, ...]

    @property
    def members(self) -> tuple[str, ...]:
        return self.train + (self.test,)


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
        label_bytes=1, names_file="batches.meta.txt", fallback_classes=CIFAR10_CLASSES),
    "cifar100": CifarSpec(
        "cifar-100-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "cifar-100-binary", ("train.bin",), "test.bin",
        label_bytes=2, names_file="fine_label_names.txt",
        fallback_classes=tuple(f"class_{i:02d}" for i in range(100))),
}


def _decode_cifar(spec: CifarSpec, blobs: dict[str, bytes], where: str) -> RawData:
    parts = [parse_cifar_bin(blobs[f], label_bytes=spec.label_bytes, source=f"{where}/{f}") for f in spec.train]
    test_x, test_y = parse_cifar_bin(blobs[spec.test], label_bytes=spec.label_bytes, source=f"{where}/{spec.test}")
    classes = spec.fallback_classes
    if spec.names_file in blobs:
        names = tuple(line.strip() for line in blobs[spec.names_file].decode().splitlines() if line.strip())
        if len(names) == len(classes):
            classes = names
    return RawData(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), test_x, test_y, classes)


def _read_tar_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read the wanted members (by base name) in one sequential pass over the gzipped tar."""
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CspnasError(f"cannot read {archive} ({exc}); delete it and download it again") from exc
    return blobs


def cifar_source(name: str, data_dir: Path, download: bool) -> Source:
    spec = CIFAR[name]
    for folder in (data_dir / spec.folder, data_dir):
        if all((folder / f).is_file() for f in spec.members):
            files = [folder / f for f in spec.members + (spec.names_file,) if (folder / f).is_file()]

            def decode(folder: Path = folder, files: list[Path] = files) -> RawData:
                return _decode_cifar(spec, {p.name: p.read_bytes() for p in files}, str(folder))
            return Source(name, folder, tuple(files), decode)
    archive = data_dir / spec.archive
    if not archive.is_file():
        if not download:
            raise CspnasError(f"{name} not found in {data_dir}: put {spec.archive} (from {spec.url}) "
                              f"or its extracted {spec.folder}/ folder there, or allow downloading")
        fetch(spec.url, archive)

    def decode_archive() -> RawData:
        blobs = _read_tar_members(archive, set(spec.members) | {spec.names_file})
        missing = [f for f in spec.members if f not in blobs]
        if missing:
            raise CspnasError(f"{archive} lacks {', '.join(missing)}; it is not the {name} binary "
                              f"version, get {spec.url}")
        return _decode_cifar(spec, blobs, str(archive))
    return Source(name, data_dir, (archive,), decode_archive)


# --- MNIST / Fashion-MNIST IDX files -------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_URLS: dict[str, str] = {  # base URLs; the files are fetched gzipped
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
IDX_CLASSES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    for path in (data_dir / stem, data_dir / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def idx_source(name: str, data_dir: Path, download: bool) -> Source:
    found = {stem: _find_idx(data_dir, stem) for stem in IDX_FILES}
    missing = [stem for stem, path in found.items() if path is None]
    if missing and not download:
        names = ", ".join(f"{stem}.gz" for stem in missing)
        raise CspnasError(f"{name} files missing from {data_dir}: put {names} (from {IDX_URLS[name]}, "
                          "gzipped or not) there, or allow downloading")
    for i, stem in enumerate(missing):
        found[stem] = data_dir / f"{stem}.gz"
        try:
            fetch(IDX_URLS[name] + f"{stem}.gz", found[stem])
        except CspnasError as exc:  # name every file still missing, not just the one that failed
            rest = ", ".join(f"{s}.gz" for s in missing[i:])
            raise CspnasError(f"could not download {name} ({exc.__cause__ or exc}); download it yourself: "
                              f"put {rest} (from {IDX_URLS[name]}) in {data_dir}") from exc
    paths = [found[stem] for stem in IDX_FILES]

    def decode() -> RawData:
        tr_x, tr_y, te_x, te_y = paths
        return RawData(idx_images(tr_x.read_bytes(), source=str(tr_x)),
                       idx_labels(tr_y.read_bytes(), source=str(tr_y)),
                       idx_images(te_x.read_bytes(), source=str(te_x)),
                       idx_labels(te_y.read_bytes(), source=str(te_y)), IDX_CLASSES[name])
    return Source(name, data_dir, tuple(paths), decode)
