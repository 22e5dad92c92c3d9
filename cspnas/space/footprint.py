"""Memory an architecture needs, estimated from its config alone, and the refusal of what cannot fit.

Nothing is built: parameters are counted from the channel plan (exactly, checked against the
built modules in tests/test_footprint.py) and activations from the feature-map sizes each
convolution produces. `cspnas.cost.memory` measures a built module instead; this estimate is
what keeps an absurd request (a 100,000-pixel input, a billion classes) from allocating at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from cspnas.errors import CspnasError
from cspnas.space.arch import ArchConfig, stage_channels
from cspnas.space.kinds import BLOCK_KINDS, STAGE_KINDS

BYTES_PER_VALUE = 4  # float32 weights and activations
# For the backward pass autograd keeps about two tensors per convolution (its output, which the norm
# needs, and the norm's or activation's output) (measured in tests/test_footprint.py); training also
# holds weights, their gradients and the optimizer's momentum.
TRAIN_ACTIVATION_COPIES = 2
TRAIN_WEIGHT_COPIES = 3
# An inference forward holds a block's input, its inner maps, its output and the stage's skip part at once.
INFERENCE_LIVE_MAPS = 4


@dataclass(frozen=True)
class Footprint:
    """Sizes in values (not bytes) for one image."""

    params: int
    input: int  # values of one input image
    activations: int  # every feature map the forward pass creates
    largest_map: int  # the largest single feature map

    def inference_bytes(self, batch: int = 1) -> int:
        """Weights plus what one forward pass holds at its peak (float32)."""
        return BYTES_PER_VALUE * (self.params + batch * (self.input + INFERENCE_LIVE_MAPS * self.largest_map))

    def training_bytes(self, batch: int) -> int:
        """Weights, gradients, momentum, and every activation kept for the backward pass (float32)."""
        return BYTES_PER_VALUE * (TRAIN_WEIGHT_COPIES * self.params
                                  + batch * (self.input + TRAIN_ACTIVATION_COPIES * self.activations))


def footprint(arch: ArchConfig, input_size: int) -> Footprint:
    """Parameters and feature-map sizes of `arch` on square `input_size` inputs, from the config alone."""
    acc = layer_plan(arch, input_size)
    return Footprint(params=acc.params, input=arch.in_chs * input_size * input_size, activations=acc.activations,
                     largest_map=acc.largest)


@dataclass(frozen=True)
class ConvOp:
    """One conv + norm + activation of the plan; `stage` -1 is the stem."""

    cin: int
    cout: int
    kernel: int
    out_size: int  # output side length
    groups: int
    stage: int


def layer_plan(arch: ArchConfig, input_size: int) -> LayerPlan:
    """The walk behind `footprint`: params, maps, and every conv (`convs`), join (`joins`: values of a
    sum or concatenation, by stage) and squeeze-excite (`se`) the forward pass runs, from the config alone
    (cspnas.latency_model reads its features from here)."""
    acc = LayerPlan()
    size = input_size
    prev = arch.in_chs
    stem = arch.stem
    for chs, stride in zip(stem.out_chs, stem.conv_strides()):
        size = acc.conv(prev, chs, stem.kernel_size, size, stride)
        prev = chs
    if stem.pool:
        size = (size - 1) // 2 + 1
        acc.map(prev * size * size)
    for i, s in enumerate(arch.stages):
        acc.stage = i
        size = _stage(acc, s, prev, size)
        prev = s.out_chs
    acc.params += prev * arch.num_classes + arch.num_classes  # the linear head
    acc.map(prev + arch.num_classes)
    return acc


class LayerPlan:
    """Running totals of the walk (params, activations, the largest map) and the ops it passed."""

    def __init__(self) -> None:
        self.params = self.activations = self.largest = 0
        self.stage = -1
        self.convs: list[ConvOp] = []
        self.joins: list[tuple[int, int]] = []  # (stage, values)
        self.se: list[tuple[int, int]] = []  # (stage, values it scales)

    def map(self, values: int) -> None:
        self.activations += values
        self.largest = max(self.largest, values)

    def conv(self, cin: int, cout: int, k: int, size: int, stride: int = 1, groups: int = 1) -> int:
        """A conv + batch norm (+ activation); returns the output's side length."""
        pad = ((stride - 1) + (k - 1)) // 2
        out = (size + 2 * pad - k) // stride + 1
        self.params += cin // groups * cout * k * k + 2 * cout
        self.map(cout * out * out)
        self.convs.append(ConvOp(cin, cout, k, out, groups, self.stage))
        return out

    def join(self, values: int) -> None:
        self.map(values)
        self.joins.append((self.stage, values))


def _stage(acc: LayerPlan, s, in_chs: int, size: int) -> int:
    plan = stage_channels(s, in_chs)
    if plan.down_chs:
        size = acc.conv(in_chs, plan.down_chs, 3, size, s.stride, s.groups)
    if STAGE_KINDS[s.stage_type].split:
        acc.conv(plan.down_chs or in_chs, plan.exp_chs, 1, size)
    kind = BLOCK_KINDS[s.block_type]
    groups = s.groups if kind.takes_groups else 1
    area = size * size
    for cin, mid, cout in zip(plan.block_chs_in, plan.block_mid, plan.block_out):
        widths = {"in": cin, "mid": mid, "out": cout, "growth": cout - cin}
        for j, conv in enumerate(kind.convs):
            acc.conv(widths[conv.src], widths[conv.dst], conv.kernel, size, 1, groups if conv.grouped else 1)
            if j == 0 and s.se_ratio > 0:  # squeeze-excite on the first conv's output (cspnas.models.blocks)
                rd = max(8, int(mid * s.se_ratio + 4) // 8 * 8)
                acc.params += 2 * mid * rd + rd + mid
                acc.map(mid * area)
                acc.se.append((acc.stage, mid * area))
        if kind.width == "residual" and cin != cout:
            acc.conv(cin, cout, 1, size)  # projection shortcut
        acc.join(cout * area)  # the sum (residual) or the concatenation (dense)
    last = plan.block_out[-1]
    if not STAGE_KINDS[s.stage_type].split:
        if last != s.out_chs:
            acc.conv(last, s.out_chs, 1, size)
        return size
    stage = STAGE_KINDS[s.stage_type]
    if stage.transition_b:
        acc.conv(last, plan.out_b_chs, 1, size)
    fused = (plan.out_b_chs if stage.transition_b else last) + plan.skip_chs
    acc.join(fused * area)  # the concatenation
    if stage.transition:
        acc.conv(fused, s.out_chs, 1, size)
    return size


# -- the device's limit ------------------------------------------------------------------------------

def available_bytes(device: str) -> tuple[int, str] | None:
    """Memory `device` can give now, and its description; None when it cannot be read (no such GPU:
    refusing that is the device check's job)."""
    if device.startswith("cuda"):
        import torch  # only here: the estimate itself needs no torch

        if not torch.cuda.is_available():
            return None
        index = int(device.partition(":")[2] or torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            return None
        free, _total = torch.cuda.mem_get_info(index)
        return int(free), f"free on cuda:{index}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "of available RAM"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of available RAM"
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def ensure_fits(need_bytes: int, device: str, what: str, fix: str) -> None:
    """Refuse, in one line with the estimate and the limit, what needs more memory than `device` has."""
    limit = available_bytes(device)
    if limit is None or need_bytes <= limit[0]:
        return
    raise CspnasError(f"{what} needs about {format_bytes(need_bytes)} of memory, more than the "
                      f"{format_bytes(limit[0])} {limit[1]}; {fix}")
