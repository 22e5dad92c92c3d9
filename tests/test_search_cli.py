"""`cspnas search` as a new user meets it: a cost estimate first, --image-size, no Ray auth noise.

One real local search (CLI subprocess, real Ray, digits resized from 8x8 to 6x6) serves the module.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from cspnas.data import load_dataset
from cspnas.data.images import resize_images
from cspnas.search.estimate import estimate_search
from cspnas.search.settings import search_training
from cspnas.space.searchspace import load_space
from process_group import run_in_group

SIZE = 6


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "cspnas.cli", "search", "--budget", "2", "--epochs", "1", "--concurrency", "1",
           "--image-size", str(SIZE), "--device", "cpu", "--sampler", "random", "--no-dashboard",
           "--name", "small", "--results-dir", str(root)]
    proc = run_in_group(cmd, timeout=300, what="cspnas search")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, root / "small"


@pytest.mark.slow  # shares the module's ~40-90 s search
def test_local_search_prints_no_ray_auth_warning(search):
    proc, _ = search
    for text in (proc.stdout, proc.stderr):
        assert "token authentication" not in text.lower(), text[-2000:]


@pytest.mark.slow  # shares the module's ~40-90 s search
def test_search_starts_with_a_cost_estimate(search):
    proc, _ = search
    lines = proc.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("estimate: a typical candidate"))
    assert f"at {SIZE}x{SIZE}" in lines[first] and "per epoch" in lines[first]
    assert "per trial of 1 epoch" in lines[first]
    assert lines[first + 1].startswith("estimate: 2 trials, 1 at a time: roughly")


@pytest.mark.slow  # shares the module's ~40-90 s search
def test_image_size_is_recorded_and_exported(search, tmp_path):
    _, run = search
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["settings"]["image_size"] == SIZE
    assert config["input_size"] == SIZE and config["latency"]["input_size"] == SIZE
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "cspnas.cli", "export", str(run), "--out", str(out),
                           "--format", "json,onnx"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    card = (out / "MODEL.md").read_text()
    assert f"(N, 1, {SIZE}, {SIZE})" in card and f"resized every image to {SIZE}x{SIZE}" in card
    import onnx

    dims = [d.dim_value for d in onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims[-2:] == [SIZE, SIZE]


def test_resize_is_area_averaging_when_shrinking_and_cached(tmp_path):
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4) * 10
    small = resize_images(x, 2)
    # each output pixel is the mean of its 2x2 block: (0+10+40+50)/4 = 25, ...
    assert small.tolist() == [[[[25, 45], [105, 125]]]] and small.dtype == torch.uint8
    assert resize_images(x, 8).shape == (1, 1, 8, 8)
    assert resize_images(x, 4) is x
    folder = tmp_path / "imgs"
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True)
            for i in range(6):
                color = (40 * i, 100 if label == "a" else 0, 7)
                Image.new("RGB", (12, 12), color).save(folder / split / label / f"{i}.png")
    cache = tmp_path / "cache"
    data = load_dataset("folder", folder, cache_dir=cache, image_size=SIZE, val_fraction=0.25)
    assert data.input_size == SIZE and data.train_x.dtype == torch.uint8
    cached = sorted(p.name for p in (cache / "decoded").iterdir())
    assert any(name.endswith(f"-{SIZE}px.safetensors") for name in cached), cached
    again = load_dataset("folder", folder, cache_dir=cache, image_size=SIZE, val_fraction=0.25)
    assert torch.equal(again.train_x, data.train_x)


def test_estimate_scales_with_the_image_size():
    space = load_space("default")
    train = search_training(epochs=2, batch_size=16, device="cpu")  # the probe trains 2 batches: keep them small
    small = estimate_search(space, load_dataset("digits"), train, budget=10, concurrency=2, threads=1)
    big = estimate_search(space, load_dataset("digits", image_size=16), train, budget=10, concurrency=2, threads=1)
    assert small.image_size == 8 and big.image_size == 16
    assert big.typical_macs > 2 * small.typical_macs  # 4x the pixels
    assert small.trial_s == pytest.approx(2 * small.epoch_s)
    assert small.search_s == pytest.approx(10 * small.trial_s / 2)
    assert small.epoch_range_s[0] <= small.epoch_s <= small.epoch_range_s[1]
    assert big.epoch_s > small.epoch_s
