"""Published CSPNet-family models as readable ArchConfigs (parameter counts equal timm's).

Width conventions translate from timm's as follows: timm's `block_ratio` is relative to a
stage's out_chs, ours to the width entering the blocks, so every timm preset here has
block_ratio 1.0; timm's 'cs3' stage is our 'fusion_first', 'dark' stage our 'plain'.
"""
from __future__ import annotations

from typing import Callable

from cspnas.space.arch import ArchConfig, StageConfig, StemConfig


def _stages(depths, widths, strides, **per_stage) -> tuple[StageConfig, ...]:
    """Stages from per-stage tuples; a scalar value applies to every stage, a short tuple repeats its last."""
    n = len(depths)

    def at(value, i):
        if isinstance(value, tuple):
            return value[min(i, len(value) - 1)]
        return value

    return tuple(
        StageConfig(depth=depths[i], out_chs=widths[i], stride=at(strides, i),
                    **{k: at(v, i) for k, v in per_stage.items()})
        for i in range(n)
    )


def cspresnet50(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(64,), kernel_size=7, stride=4, pool=True),
        stages=_stages((3, 3, 5, 2), (128, 256, 512, 1024), (1, 2),
                       stage_type="csp", block_type="bottleneck", expand_ratio=2.0, bottle_ratio=0.5,
                       cross_linear=True),
        in_chs=in_chs, num_classes=num_classes,
    )


def cspresnext50(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(64,), kernel_size=7, stride=4, pool=True),
        stages=_stages((3, 3, 5, 2), (256, 512, 1024, 2048), (1, 2),
                       stage_type="csp", block_type="resnext", groups=32, expand_ratio=1.0, bottle_ratio=1.0,
                       cross_linear=True),
        in_chs=in_chs, num_classes=num_classes,
    )


def cspdarknet53(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(32,), kernel_size=3, stride=1),
        stages=_stages((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024), 2,
                       stage_type="csp", block_type="dark", expand_ratio=(2.0, 1.0), bottle_ratio=(0.5, 1.0),
                       down_growth=True),
        in_chs=in_chs, num_classes=num_classes,
    )


def darknet53(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(32,), kernel_size=3, stride=1),
        stages=_stages((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024), 2,
                       stage_type="plain", block_type="dark", bottle_ratio=0.5),
        in_chs=in_chs, num_classes=num_classes,
    )


def make_divisible(v: float, divisor: int = 8) -> int:
    # timm's make_divisible (round to nearest multiple, never more than 10% down)
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _cs3darknet(width: float, depth: float, num_classes: int, in_chs: int) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=tuple(make_divisible(c * width) for c in (32, 64)), kernel_size=3, stride=2,
                        act="silu"),
        stages=_stages(tuple(int(d * depth) for d in (3, 6, 9, 3)),  # timm truncates depth multiples
                       tuple(make_divisible(c * width) for c in (128, 256, 512, 1024)), 2,
                       stage_type="fusion_first", block_type="dark", bottle_ratio=1.0, act="silu"),
        in_chs=in_chs, num_classes=num_classes,
    )


def cs3darknet_s(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return _cs3darknet(0.5, 0.5, num_classes, in_chs)


def cs3darknet_m(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return _cs3darknet(0.75, 0.67, num_classes, in_chs)


def cs3darknet_l(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return _cs3darknet(1.0, 1.0, num_classes, in_chs)


def darknet21(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(32,), kernel_size=3, stride=1),
        stages=_stages((1, 1, 1, 2, 2), (64, 128, 256, 512, 1024), 2,
                       stage_type="plain", block_type="dark", bottle_ratio=0.5),
        in_chs=in_chs, num_classes=num_classes,
    )


def sedarknet21(num_classes: int = 1000, in_chs: int = 3) -> ArchConfig:
    return ArchConfig(
        stem=StemConfig(out_chs=(32,), kernel_size=3, stride=1),
        stages=_stages((1, 1, 1, 2, 2), (64, 128, 256, 512, 1024), 2,
                       stage_type="plain", block_type="dark", bottle_ratio=0.5, se_ratio=1 / 16),
        in_chs=in_chs, num_classes=num_classes,
    )


PRESETS: dict[str, Callable[..., ArchConfig]] = {
    f.__name__: f
    for f in (cspresnet50, cspresnext50, cspdarknet53, darknet53, cs3darknet_s, cs3darknet_m, cs3darknet_l,
              darknet21, sedarknet21)
}
