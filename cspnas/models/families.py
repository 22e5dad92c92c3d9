"""Hand-designed CSP families for small inputs: the baselines a search has to beat, as curves, not points.

Each family is one published (timm-exact) preset of `cspnas.models.presets` brought to small images
(8-64 px, the default search space's range) by one documented scaling rule, at four widths:

- **stem and strides for the input size**: the ImageNet stem (stride 2-4, sometimes a pool) is replaced by
  one 3x3 conv of stride `stem_stride(input_size)` (1 up to 32 px, 2 up to 64 px, as CIFAR ResNets do);
  the preset's **last three stages** are kept, with strides 1, 2, 2 (like the default space), so a 32 px
  input ends at 8x8;
- **width multiplier** (the member's size): every stage width times it, rounded to a multiple of 8 (timm's
  make_divisible); at 1/8 the stages are 32-64-128 wide, at 1/4 64-128-256: the default space's range; the
  stem is half the first stage's width (16-32 for s-l, the default space's stem range);
- **depth multiplier** (the family's): every stage depth times it, rounded half up, at least 1.

Everything else (stage type, block type, split/expand/bottleneck ratios, groups, activation, cross_linear,
down_growth) is the preset's own. `cspnas presets` lists the members; `cspnas inspect cspdarknet-s` (or
train, export, any command taking an architecture name) builds one. Add a family: one `Family` entry below.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cspnas.models.presets import PRESETS, make_divisible
from cspnas.space.arch import ArchConfig, StemConfig

# member size -> width multiplier of the preset's widths
SIZES: dict[str, float] = {"xs": 1 / 16, "s": 1 / 8, "m": 3 / 16, "l": 1 / 4}
STAGES_KEPT = 3
STAGE_STRIDES = (1, 2, 2)


@dataclass(frozen=True)
class Family:
    """A hand-designed family: a preset, the stage settings that make it this family, a depth multiplier."""

    name: str
    preset: str  # a key of PRESETS (timm-exact)
    depth_multiplier: float
    description: str
    stage_changes: dict[str, Any] = field(default_factory=dict)  # e.g. plain stages for the ResNet-style family


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("resnet", "cspresnet50", 0.5, "plain ResNet-style: bottleneck blocks, plain stages (CSPResNet without "
           "the split)", {"stage_type": "plain", "cross_linear": False}),
    Family("cspresnet", "cspresnet50", 0.5, "CSPResNet-style: csp stages, bottleneck blocks, split 0.5"),
    Family("cspdarknet", "cspdarknet53", 0.25, "CSPDarknet-style: csp stages, dark blocks, split 0.5"),
    Family("cs3darknet", "cs3darknet_l", 0.25, "CS3 / YOLOv5 C3-style: fusion_first stages, dark blocks, SiLU"),
    Family("darknet", "darknet53", 0.25, "plain Darknet: dark blocks, plain stages"),
)}


def stem_stride(input_size: int) -> int:
    """The stem's stride for square inputs of this side: 1 up to 32 px, then 2."""
    return 1 if input_size <= 32 else 2


def _depth(depth: int, multiplier: float) -> int:
    return max(1, int(depth * multiplier + 0.5))  # half up: 1.5 -> 2, not banker's 2.5 -> 2


def family_member(family: str, size: str, *, input_size: int = 32, num_classes: int = 10,
                  in_chs: int = 3) -> ArchConfig:
    """The `size` member of `family` for inputs of `input_size` px (see the module docstring's rule)."""
    fam, width = FAMILIES[family], SIZES[size]
    preset = PRESETS[fam.preset]()
    stages = tuple(
        replace(stage, depth=_depth(stage.depth, fam.depth_multiplier),
                out_chs=make_divisible(stage.out_chs * width), stride=stride, **fam.stage_changes)
        for stage, stride in zip(preset.stages[-STAGES_KEPT:], STAGE_STRIDES))
    stem = StemConfig(out_chs=(make_divisible(stages[0].out_chs / 2),), kernel_size=3,
                      stride=stem_stride(input_size), act=preset.stem.act)
    return ArchConfig(stem=stem, stages=stages, in_chs=in_chs, num_classes=num_classes).with_io()


def member_name(family: str, size: str) -> str:
    return f"{family}-{size}"


MEMBERS: dict[str, tuple[str, str]] = {member_name(f, s): (f, s) for f in FAMILIES for s in SIZES}


def members(input_size: int = 32, num_classes: int = 10, in_chs: int = 3) -> dict[str, ArchConfig]:
    """Every family member by name (`cspdarknet-s`), in family then size order."""
    return {name: family_member(f, s, input_size=input_size, num_classes=num_classes, in_chs=in_chs)
            for name, (f, s) in MEMBERS.items()}
