"""cspnas.data: loaders (parsing real file formats written into tmp_path), splits, cache, augmentation."""
from __future__ import annotations

import gzip
import logging
import os
import struct
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cspnas.data import DATASETS, ImageData, augment_batch, load_dataset
from cspnas.data import sources
from cspnas.data.images import channel_stats
from cspnas.data.splits import stratified_split, stratified_subset
from cspnas.errors import CspnasError

# ---------------------------------------------------------------- helpers writing real formats


def cifar_records(labels: list[int], label_bytes: int = 1, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """CIFAR binary records (label byte(s), then R, G, B planes) and the images as [N, 3, 32, 32]."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    blob = b"".join(bytes([99] * (label_bytes - 1) + [label]) + img.tobytes() for label, img in zip(labels, images))
    return blob, images


def write_cifar10(folder: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    xs, ys = [], []
    for b in range(1, 6):
        labels = [(b + i) % 10 for i in range(per_batch)]
        blob, images = cifar_records(labels, seed=b)
        (folder / f"data_batch_{b}.bin").write_bytes(blob)
        xs.append(images)
        ys += labels
    test_labels = [0, 1, 2]
    blob, test_images = cifar_records(test_labels, seed=99)
    (folder / "test_batch.bin").write_bytes(blob)
    names = "airplane automobile bird cat deer dog frog horse ship truck".split()
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return np.concatenate(xs), np.array(ys), test_images, np.array(test_labels)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 5, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        blob = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return arrays


COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "fox": (10, 10, 200)}


def write_folder(root: Path, splits: dict[str, int], size=(6, 5), mode: str = "RGB",
                 classes=COLOURS) -> None:
    """<root>/<split>/<class>/<i>.png, each a solid colour whose last channel encodes i."""
    for split, count in splits.items():
        for name, colour in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                value = (colour[0], colour[1], i) if mode == "RGB" else colour[0]
                Image.new(mode, size, value).save(root / split / name / f"{i:03d}.png")


# ---------------------------------------------------------------- digits and ImageData


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def test_digits_shapes_and_stats(digits: ImageData):
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert digits.train_x.shape[1:] == (1, 8, 8)
    assert (digits.in_chs, digits.input_size, digits.num_classes) == (1, 8, 10)
    total = len(digits.train_x) + len(digits.val_x) + len(digits.test_x)
    assert total == 1797
    assert len(digits.test_x) == round(0.2 * 1797)
    assert len(digits.val_x) == round(0.1 * (1797 - len(digits.test_x)))
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    assert digits.hflip is False
    x = digits.train_x.double() / 255
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-6)
    assert digits.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-6)


def rows(x: torch.Tensor) -> Counter:
    return Counter(bytes(r) for r in x.reshape(len(x), -1).numpy())


def test_digits_test_split_is_fixed_and_val_comes_from_train():
    a = load_dataset("digits", split_seed=0)
    b = load_dataset("digits", split_seed=1)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_x, b.val_x)
    # Whatever the seed, train + val is exactly the non-test part.
    assert rows(torch.cat([a.train_x, a.val_x])) == rows(torch.cat([b.train_x, b.val_x]))
    assert load_dataset("digits", split_seed=1).val_y.tolist() == b.val_y.tolist()  # deterministic


def test_image_data_to_and_summary(digits: ImageData):
    moved = digits.to("cpu")
    assert moved is not digits and torch.equal(moved.train_x, digits.train_x)
    summary = digits.summary()
    assert summary["train"] == len(digits.train_x) and summary["test"] == len(digits.test_x)
    assert summary["input_shape"] == [1, 8, 8] and summary["num_classes"] == 10


def test_image_data_rejects_inconsistent_tensors(digits: ImageData):
    with pytest.raises(ValueError, match="val_x"):
        replace(digits, val_x=digits.val_x.float())
    with pytest.raises(ValueError, match="train_y"):
        replace(digits, train_y=digits.train_y[:-1])


def test_channel_stats_matches_float_computation():
    x = torch.randint(0, 256, (50, 3, 7, 9), dtype=torch.uint8)
    mean, std = channel_stats(x)
    xf = x.double() / 255
    assert mean == pytest.approx(xf.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(xf.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_unknown_dataset_and_bad_fraction():
    with pytest.raises(CspnasError, match="choose one of"):
        load_dataset("imagenet")
    with pytest.raises(CspnasError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    assert "digits" in DATASETS and "folder" in DATASETS


# ---------------------------------------------------------------- splits and subsets


def test_stratified_split_is_disjoint_complete_stratified_and_seeded():
    y = torch.tensor([0] * 100 + [1] * 50 + [2] * 10)
    kept, held = stratified_split(y, 0.2, seed=3)
    assert len(held) == 32
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(y)))
    assert torch.bincount(y[held]).tolist() == [20, 10, 2]
    again, _ = stratified_split(y, 0.2, seed=3)
    other, _ = stratified_split(y, 0.2, seed=4)
    assert torch.equal(kept, again) and not torch.equal(kept, other)


def test_train_subset_is_exact_stratified_and_leaves_val_alone(digits: ImageData):
    sub = load_dataset("digits", train_subset=200)
    assert len(sub.train_x) == 200
    counts = torch.bincount(sub.train_y, minlength=10)
    assert int(counts.min()) >= 19 and int(counts.max()) <= 21
    assert torch.equal(sub.val_x, digits.val_x)
    assert rows(sub.train_x) <= rows(digits.train_x)  # a subset of the training part
    picked = stratified_subset(digits.train_y, 50, seed=0)
    assert torch.equal(picked, stratified_subset(digits.train_y, 50, seed=0))
    assert torch.bincount(digits.train_y[picked], minlength=10).tolist() == [5] * 10
    with pytest.raises(CspnasError, match="train_subset"):
        load_dataset("digits", train_subset=10_000)


# ---------------------------------------------------------------- CIFAR binary


def test_cifar10_binary_folder(tmp_path: Path):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path / "c10" / "cifar-10-batches-bin")
    data = load_dataset("cifar10", tmp_path / "c10", cache_dir=tmp_path / "cache", download=False,
                        val_fraction=0.25)
    assert data.classes[:3] == ("airplane", "automobile", "bird") and data.num_classes == 10
    assert data.train_x.shape[1:] == (3, 32, 32) and data.hflip
    assert len(data.train_x) + len(data.val_x) == 20 and len(data.val_x) == 5
    # Test split is kept whole and in file order; pixels are the R, G, B planes as written.
    assert np.array_equal(data.test_x.numpy(), test_x) and data.test_y.tolist() == test_y.tolist()
    expected = rows(torch.from_numpy(train_x))
    assert rows(torch.cat([data.train_x, data.val_x])) == expected


def test_cifar10_reads_the_official_tarball_without_extracting(tmp_path: Path):
    train_x, _, test_x, _ = write_cifar10(tmp_path / "src" / "cifar-10-batches-bin")
    (tmp_path / "c10").mkdir()
    with tarfile.open(tmp_path / "c10" / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    data = load_dataset("cifar10", tmp_path / "c10", cache_dir=tmp_path / "cache", download=False)
    assert np.array_equal(data.test_x.numpy(), test_x)
    assert rows(torch.cat([data.train_x, data.val_x])) == rows(torch.from_numpy(train_x))
    assert not (tmp_path / "c10" / "cifar-10-batches-bin").exists()


def test_cifar100_uses_fine_labels(tmp_path: Path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    fine = [5, 42, 99, 7, 0, 63, 5, 42, 99, 7]
    blob, images = cifar_records(fine, label_bytes=2)
    (folder / "train.bin").write_bytes(blob)
    blob, test_images = cifar_records([17, 88], label_bytes=2, seed=1)
    (folder / "test.bin").write_bytes(blob)
    (folder / "fine_label_names.txt").write_text("\n".join(f"name{i}" for i in range(100)))
    data = load_dataset("cifar100", tmp_path, cache_dir=tmp_path / "cache", download=False, val_fraction=0.2)
    assert data.num_classes == 100 and data.classes[42] == "name42"
    assert data.test_y.tolist() == [17, 88]  # the fine byte, not the coarse one (99)
    assert np.array_equal(data.test_x.numpy(), test_images)
    assert sorted(torch.cat([data.train_y, data.val_y]).tolist()) == sorted(fine)


def test_cifar_corrupt_file_is_a_user_error(tmp_path: Path):
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    with open(tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin", "ab") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(CspnasError, match="data_batch_3.bin.*not a CIFAR binary file"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache", download=False)


def test_missing_files_without_download_say_what_to_put_where(tmp_path: Path):
    with pytest.raises(CspnasError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert "cifar-10-binary.tar.gz" in msg and str(tmp_path) in msg and "\n" not in msg
    with pytest.raises(CspnasError) as err:
        load_dataset("fashion-mnist", tmp_path, download=False)
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "t10k-labels-idx1-ubyte.gz" in str(err.value)


# ---------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path: Path, gz: bool):
    arrays = write_mnist(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache", download=False, val_fraction=0.25)
    assert data.train_x.shape[1:] == (1, 28, 28) and not data.hflip
    assert np.array_equal(data.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert len(data.train_x) == 15 and len(data.val_x) == 5


def test_fashion_mnist_class_names_and_flips(tmp_path: Path):
    write_mnist(tmp_path)
    data = load_dataset("fashion-mnist", tmp_path, cache_dir=tmp_path / "cache", download=False)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot" and data.hflip


def test_idx_bad_magic_and_count_mismatch(tmp_path: Path):
    write_mnist(tmp_path / "a")
    (tmp_path / "a" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x01" + bytes(8)))
    with pytest.raises(CspnasError, match="bad magic number"):
        load_dataset("mnist", tmp_path / "a", cache_dir=tmp_path / "cache", download=False)
    write_mnist(tmp_path / "b")
    (tmp_path / "b" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(CspnasError, match="20 images but 7 labels"):
        load_dataset("mnist", tmp_path / "b", cache_dir=tmp_path / "cache", download=False)


def test_download_fetches_missing_files(tmp_path: Path, monkeypatch):
    """The real download code path, served from a file:// URL (tests never touch the network)."""
    arrays = write_mnist(tmp_path / "mirror")
    monkeypatch.setitem(sources.IDX_URLS, "mnist", (tmp_path / "mirror").as_uri() + "/")
    data = load_dataset("mnist", tmp_path / "dest", cache_dir=tmp_path / "cache", download=True)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(f"{s}.gz" for s in arrays)
    assert np.array_equal(data.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_failed_download_is_a_user_error(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sources.IDX_URLS, "mnist", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(CspnasError, match="could not download .* download it yourself") as err:
        load_dataset("mnist", tmp_path / "dest", cache_dir=tmp_path / "cache", download=True)
    for stem in sources.IDX_FILES:  # every missing file is named, so one manual download fixes it
        assert f"{stem}.gz" in str(err.value)
    assert not any((tmp_path / "dest").glob("*.part"))


# ---------------------------------------------------------------- decode cache


def test_second_load_hits_cache_until_the_source_changes(tmp_path: Path, caplog):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder)
    kwargs = dict(cache_dir=tmp_path / "cache", download=False)
    with caplog.at_level(logging.INFO, logger="cspnas.data"):
        first = load_dataset("cifar10", tmp_path, **kwargs)
        assert "decoded cifar10" in caplog.text
        caplog.clear()
        second = load_dataset("cifar10", tmp_path, **kwargs)
        assert "loaded cifar10 from cache" in caplog.text and "decoded cifar10" not in caplog.text
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    assert first.classes == second.classes and first.mean == second.mean
    assert len(list((tmp_path / "cache" / "decoded").glob("*.safetensors"))) == 1

    # Same size and mtime: the cache is trusted, so the old pixels come back (proof it is read).
    test_file = folder / "test_batch.bin"
    st = test_file.stat()
    blob = bytearray(test_file.read_bytes())
    blob[1] ^= 0xFF  # first pixel of the first test image
    test_file.write_bytes(bytes(blob))
    os.utime(test_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert torch.equal(load_dataset("cifar10", tmp_path, **kwargs).test_x, first.test_x)

    # A new mtime invalidates the entry: the file is decoded again, in place of the old one.
    os.utime(test_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load_dataset("cifar10", tmp_path, **kwargs)
    assert int(third.test_x[0, 0, 0, 0]) == int(first.test_x[0, 0, 0, 0]) ^ 0xFF
    assert len(list((tmp_path / "cache" / "decoded").glob("*.safetensors"))) == 1


# ---------------------------------------------------------------- image folders


def test_folder_dataset(tmp_path: Path):
    write_folder(tmp_path / "ds", {"train": 10, "test": 2})
    data = load_dataset("folder", tmp_path / "ds", cache_dir=tmp_path / "cache", val_fraction=0.2)
    assert data.classes == ("cat", "dog", "fox") and data.hflip
    assert data.train_x.shape[1:] == (3, 5, 6)  # PIL size is (width, height)
    assert len(data.train_x) == 24 and len(data.val_x) == 6 and len(data.test_x) == 6
    assert data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    for x, y in zip(torch.cat([data.train_x, data.test_x]), torch.cat([data.train_y, data.test_y])):
        r, g, _ = COLOURS[data.classes[int(y)]]
        assert int(x[0].unique()) == r and int(x[1].unique()) == g  # lossless PNG round trip


def test_folder_uses_val_as_test_set_when_no_test(tmp_path: Path):
    write_folder(tmp_path, {"train": 5, "val": 3})
    data = load_dataset("folder", tmp_path, cache_dir=tmp_path / "cache")
    assert len(data.test_x) == 9
    write_folder(tmp_path / "plain", {"train": 5})
    assert load_dataset("folder", tmp_path / "plain", cache_dir=tmp_path / "cache").test_x is None


def test_folder_greyscale_and_resizing(tmp_path: Path, caplog):
    write_folder(tmp_path, {"train": 4}, mode="L")
    Image.new("L", (12, 10), 77).save(tmp_path / "train" / "dog" / "big.png")
    with caplog.at_level(logging.INFO, logger="cspnas.data"):
        data = load_dataset("folder", tmp_path, cache_dir=tmp_path / "cache", val_fraction=0.2)
    assert data.train_x.shape[1:] == (1, 5, 6)
    assert "resizing 1 of 13 images to 6x5" in caplog.text
    assert 77 in torch.cat([data.train_x, data.val_x]).unique().tolist()


@pytest.mark.parametrize("case, match", [
    ("no_dir", "does not exist"),
    ("no_train", "no train/ folder"),
    ("one_class", "need at least 2"),
    ("empty_class", "has no images"),
    ("mismatch", r"missing: \['fox'\]"),
    ("corrupt", "cannot decode image"),
])
def test_folder_errors(tmp_path: Path, case: str, match: str):
    root = tmp_path / "ds"
    if case == "no_train":
        root.mkdir()
    elif case == "one_class":
        write_folder(root, {"train": 2}, classes={"cat": (1, 2, 3)})
    elif case == "empty_class":
        write_folder(root, {"train": 2})
        (root / "train" / "zebra").mkdir()
    elif case == "mismatch":
        write_folder(root, {"train": 2})
        write_folder(root, {"test": 2}, classes={"cat": (1, 2, 3), "dog": (3, 2, 1)})
    elif case == "corrupt":
        write_folder(root, {"train": 2})
        (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CspnasError, match=match) as err:
        load_dataset("folder", root, cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_folder_needs_a_data_dir():
    with pytest.raises(CspnasError, match="needs a data directory"):
        load_dataset("folder")


# ---------------------------------------------------------------- augmentation


def test_augment_identity_and_shapes():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment_batch(x, pad=0, hflip=False, generator=None), x)
    for inp in (x, x.float()):
        out = augment_batch(inp, pad=2, hflip=True, generator=torch.Generator().manual_seed(0))
        assert out.shape == inp.shape and out.dtype == inp.dtype


def test_every_output_is_a_crop_of_the_padded_input_and_all_offsets_occur():
    pad = 2
    x = torch.rand(300, 2, 7, 9)
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    out = augment_batch(x, pad=pad, hflip=True, generator=torch.Generator().manual_seed(1))

    def crop(i: int, dy: int, dx: int, flip: bool) -> torch.Tensor:
        window = padded[i, :, dy:dy + 7, dx:dx + 9]
        return window.flip(-1) if flip else window

    seen = set()
    for i in range(len(x)):
        matches = {(dy, dx, flip)
                   for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for flip in (False, True)
                   if torch.equal(out[i], crop(i, dy, dx, flip))}
        assert len(matches) == 1, f"sample {i} is not exactly one crop of its padded input"
        seen |= matches
    assert len(seen) == (2 * pad + 1) ** 2 * 2  # every offset, flipped and not


def test_flips_happen_for_about_half_and_are_seeded():
    x = torch.rand(2000, 1, 4, 4)
    out = augment_batch(x, pad=0, hflip=True, generator=torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    unchanged = (out == x).flatten(1).all(1)
    assert bool((flipped ^ unchanged).all())
    assert 0.45 < flipped.float().mean() < 0.55
    again = augment_batch(x, pad=0, hflip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(augment_batch(x, pad=0, hflip=False, generator=None), x)


def test_augment_rejects_pad_too_large():
    with pytest.raises(ValueError, match="pad"):
        augment_batch(torch.zeros(2, 1, 4, 4), pad=4, hflip=False, generator=None)
