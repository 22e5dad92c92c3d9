"""Fixed batches of real training images (int8 calibration, zero-cost scores) and int8 accuracy.

The search's cost step, the trained trial's `val_acc_int8` and `cspnas export --format onnx-int8`
all take their calibration images from `calibration_batch`, so each quantizes the same way; the
zero-cost scores (cspnas.cost.zero_cost) take theirs from `image_batch` by the same rule.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cspnas.cost.onnx_runtime import onnx_bytes, quantize_int8, session
from cspnas.data import ImageData
from cspnas.train.loop import _normalizer, _prepare


def image_batch(data: ImageData, n: int, seed: int, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images (fewer if the split is smaller) chosen by `seed`, normalised as the
    model sees them, as float32 N x C x H x W (resized to `size` x `size` when given), and their
    labels. The first images of a larger `n` are those of a smaller one (same seed)."""
    n = min(n, len(data.train_x))
    index = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(seed))[:n]
    scale, shift = _normalizer(data.mean, data.std, torch.device("cpu"))
    x = _prepare(data.train_x[index], scale, shift, channels_last=False)
    if size is not None and size != x.shape[-1]:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous(), data.train_y[index].long()


def calibration_batch(data: ImageData, n: int, seed: int, size: int | None = None) -> np.ndarray:
    """The int8 calibration images: `image_batch`'s images as a numpy array."""
    return image_batch(data, n, seed, size)[0].numpy()


def int8_accuracy(model: nn.Module, data: ImageData, calibration_images: int, seed: int, threads: int = 1,
                  batch_size: int = 256) -> float:
    """Validation top-1 accuracy (0..1) of `model` exported to ONNX and quantized to int8 as the
    latency backend and `cspnas export --format onnx-int8` do, run by ONNX Runtime on the CPU."""
    model = copy.deepcopy(model).float().eval().cpu()  # the caller's model stays where it is
    size = data.input_size
    fp32 = onnx_bytes(model, torch.zeros((1, data.in_chs, size, size)))
    sess = session(quantize_int8(fp32, calibration_batch(data, calibration_images, seed)), threads)
    scale, shift = _normalizer(data.mean, data.std, torch.device("cpu"))
    correct = 0
    for start in range(0, len(data.val_x), batch_size):
        x = _prepare(data.val_x[start:start + batch_size], scale, shift, channels_last=False).numpy()
        logits = sess.run(None, {"input": x})[0]
        correct += int((logits.argmax(axis=1) == data.val_y[start:start + batch_size].numpy()).sum())
    return correct / len(data.val_x)
