"""Building blocks: conv-norm-act, squeeze-excite, and the residual/dense blocks a stage repeats."""
from __future__ import annotations

import torch
from torch import nn

from cspnas.space.kinds import BLOCK_KINDS

_ACTS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),  # Darknet's slope
    "silu": lambda: nn.SiLU(inplace=True),
    "mish": lambda: nn.Mish(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "gelu": lambda: nn.GELU(),
}


def make_act(name: str) -> nn.Module:
    return _ACTS[name]()


def activation_types() -> tuple[type[nn.Module], ...]:
    """The module classes `make_act` builds (what NASWOT hooks, cspnas.cost.zero_cost)."""
    return tuple({type(make()) for make in _ACTS.values()})


class ConvNormAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional activation, 'same' padding for odd kernels."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: str | None = "relu"):
        padding = ((stride - 1) + (kernel_size - 1)) // 2
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        if act is not None:
            self.act = make_act(act)


def _divisible(v: float, divisor: int = 8) -> int:
    # timm's make_divisible with round_limit=0 (used for SE widths)
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> 1x1 reduce (act) -> 1x1 expand -> sigmoid gate (timm's SEModule)."""

    def __init__(self, chs: int, ratio: float, act: str):
        super().__init__()
        rd = _divisible(chs * ratio)
        self.fc1 = nn.Conv2d(chs, rd, 1)
        self.act = make_act(act)
        self.fc2 = nn.Conv2d(rd, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


def _maybe_se(chs: int, ratio: float, act: str) -> nn.Module:
    return SqueezeExcite(chs, ratio, act) if ratio > 0 else nn.Identity()


def _shortcut(in_chs: int, out_chs: int) -> nn.Module:
    # Residual blocks need a projection when the width changes (pitfall noted in csp-notes).
    return nn.Identity() if in_chs == out_chs else ConvNormAct(in_chs, out_chs, 1, act=None)


class BottleneckBlock(nn.Module):
    """ResNet/ResNeXt bottleneck: 1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, add, activation."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, groups: int, act: str, se_ratio: float):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act=act)
        self.conv2 = ConvNormAct(mid_chs, mid_chs, 3, groups=groups, act=act)
        self.attn = _maybe_se(mid_chs, se_ratio, act)
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, act=None)
        self.shortcut = _shortcut(in_chs, out_chs)
        self.act = make_act(act)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.attn(self.conv2(self.conv1(x))))
        return self.act(y + self.shortcut(x))


class DarkBlock(nn.Module):
    """Darknet residual: 1x1 down to mid -> 3x3 back up, add (no activation after the add)."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, groups: int, act: str, se_ratio: float):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act=act)
        self.attn = _maybe_se(mid_chs, se_ratio, act)
        self.conv2 = ConvNormAct(mid_chs, out_chs, 3, groups=groups, act=act)
        self.shortcut = _shortcut(in_chs, out_chs)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.attn(self.conv1(x))) + self.shortcut(x)


class EdgeBlock(nn.Module):
    """Edge residual (EfficientNet-EdgeTPU style): 3x3 up to mid -> 1x1 back, add."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, groups: int, act: str, se_ratio: float):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 3, act=act)
        self.attn = _maybe_se(mid_chs, se_ratio, act)
        self.conv2 = ConvNormAct(mid_chs, out_chs, 1, act=act)
        self.shortcut = _shortcut(in_chs, out_chs)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.attn(self.conv1(x))) + self.shortcut(x)


class DenseLayer(nn.Module):
    """DenseNet layer: 1x1 to mid -> 3x3 to `growth` new channels, concatenated to the input."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, groups: int, act: str, se_ratio: float):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, act=act)
        self.attn = _maybe_se(mid_chs, se_ratio, act)
        self.conv2 = ConvNormAct(mid_chs, out_chs - in_chs, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv2(self.attn(self.conv1(x)))], dim=1)


# The module class of each block type; what each type is (letter, convs, width rule, knobs) is
# cspnas.space.kinds.BLOCK_KINDS, which validation and the channel plan read.
BLOCKS: dict[str, type[nn.Module]] = {
    "bottleneck": BottleneckBlock,
    "resnext": BottleneckBlock,  # same block; the stage's `groups` makes the 3x3 grouped
    "dark": DarkBlock,
    "edge": EdgeBlock,
    "dense": DenseLayer,
}
if set(BLOCKS) != set(BLOCK_KINDS):  # a new block type needs both its row and its class
    raise ImportError(f"cspnas.models.blocks.BLOCKS {sorted(BLOCKS)} and cspnas.space.kinds.BLOCK_KINDS "
                      f"{sorted(BLOCK_KINDS)} must name the same block types")
