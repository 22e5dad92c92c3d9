"""The architecture description: small frozen dataclasses, their JSON form, hash and validation.

An `ArchConfig` says everything needed to build a network and nothing about how it
is built: the builder in `cspnas.models` turns it into modules. Channel arithmetic
that both the validator and the builder need (how a stage splits its channels) lives
here, so that an invalid architecture is rejected before any module is made.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from cspnas.errors import ArchError

SCHEMA_VERSION = 1

STAGE_TYPES = ("csp", "fusion_first", "fusion_last", "plain")
BLOCK_TYPES = ("bottleneck", "resnext", "dark", "edge", "dense")
ACTIVATIONS = ("relu", "leaky_relu", "silu", "mish", "hardswish", "relu6", "gelu")

# Splitting rule (documented in README): when the total has >= 16 channels, the part that
# goes through the blocks is the multiple of SPLIT_DIVISOR nearest to total * ratio (clamped
# so the skip part keeps >= 1 channel); below 16 it is the nearest whole channel in
# [1, total - 1]. Both parts are always whole and non-empty.
SPLIT_DIVISOR = 8


@dataclass(frozen=True)
class StemConfig:
    """Convolutions before the first stage; one ConvNormAct per entry of `out_chs`.

    `stride` is the stem's total stride (1, 2 or 4). As in timm, the first conv takes
    stride 2 when stride > 1; a stride of 4 comes from a max pool when `pool` is set,
    else from the last conv.
    """

    out_chs: tuple[int, ...] = (32,)
    kernel_size: int = 3
    stride: int = 1
    pool: bool = False
    act: str = "leaky_relu"


@dataclass(frozen=True)
class StageConfig:
    """One stage: optional strided down conv, then blocks with the named transition placement.

    stage_type:
      csp          split -> blocks on one part -> 1x1 transition -> concat -> 1x1 transition (paper's CSP fusion)
      fusion_first split -> blocks on one part -> concat -> 1x1 transition (timm `cs3`, YOLOv5 C3)
      fusion_last  split -> blocks on one part -> 1x1 transition -> concat (no transition after)
      plain        no split: strided 3x3 down conv, then blocks on all channels (Darknet/ResNet stage)
    """

    depth: int
    out_chs: int
    stride: int = 2
    stage_type: str = "csp"
    block_type: str = "dark"
    split_ratio: float = 0.5  # share of the expanded channels that goes through the blocks
    expand_ratio: float = 1.0  # 1x1 expansion before the split: exp_chs = round(out_chs * expand_ratio)
    block_ratio: float = 1.0  # block width / width entering the blocks (!= 1 adds a projection shortcut)
    bottle_ratio: float = 0.5  # inner (mid) width of a block / its output width
    groups: int = 1  # groups of the 3x3 convs (resnext blocks, down conv)
    down_growth: bool = False  # csp stages: the down conv goes straight to out_chs (cspdarknet53)
    cross_linear: bool = False  # csp stages: no activation after the expansion conv (cspresnet50)
    se_ratio: float = 0.0  # squeeze-excite reduction ratio inside blocks; 0 disables
    act: str = "leaky_relu"


@dataclass(frozen=True)
class ArchConfig:
    stem: StemConfig
    stages: tuple[StageConfig, ...]
    in_chs: int = 3
    num_classes: int = 10
    head_dropout: float = 0.0

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "in_chs": self.in_chs,
            "num_classes": self.num_classes,
            "head_dropout": self.head_dropout,
            "stem": {**_dataclass_dict(self.stem), "out_chs": list(self.stem.out_chs)},
            "stages": [_dataclass_dict(s) for s in self.stages],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "ArchConfig":
        return arch_from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"architecture JSON is malformed: {e.msg} at line {e.lineno} column {e.colno}") from None
        return arch_from_dict(data)

    # -- identity -------------------------------------------------------------------------
    def canonical(self) -> "ArchConfig":
        """The same network with fields that have no effect reset to defaults (for hashing)."""
        stages = []
        for s in self.stages:
            if s.stage_type == "plain":
                s = replace(s, split_ratio=0.5, expand_ratio=1.0, down_growth=False, cross_linear=False)
            stages.append(s)
        return replace(self, stages=tuple(stages))

    def arch_hash(self) -> str:
        """Content hash: equal for equal networks whatever the key order or float spelling."""
        payload = _canonical_value(self.canonical().to_dict())
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_io(self, *, in_chs: int | None = None, num_classes: int | None = None) -> "ArchConfig":
        """Same body for another input channel count or class count (checked)."""
        arch = replace(
            self,
            in_chs=self.in_chs if in_chs is None else in_chs,
            num_classes=self.num_classes if num_classes is None else num_classes,
        )
        validate(arch)
        return arch

    def summary(self) -> str:
        """Compact one-line description, e.g. 'csp/dark d1-2-8 w64-128-256 s.50'."""
        types = {"csp": "C", "fusion_first": "F", "fusion_last": "L", "plain": "P"}
        blocks = {"bottleneck": "b", "resnext": "x", "dark": "d", "edge": "e", "dense": "n"}
        parts = [
            f"{types[s.stage_type]}{blocks[s.block_type]}{s.depth}x{s.out_chs}"
            + ("" if s.stage_type == "plain" else f"@{s.split_ratio:.2f}")
            for s in self.stages
        ]
        return " ".join(parts)


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _canonical_value(value: Any) -> Any:
    # Floats are spelled by value (0.5 == 0.50 == 5e-1), and ints that equal floats stay ints.
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        rounded = round(value, 9)
        return int(rounded) if rounded.is_integer() else rounded
    if isinstance(value, dict):
        return {k: _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    return value


# -- parsing and validation --------------------------------------------------------------------

def arch_from_dict(data: Any) -> ArchConfig:
    """Parse the JSON form, naming the offending field on any error."""
    if not isinstance(data, Mapping):
        raise ArchError(f"architecture: must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    version = data.pop("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ArchError(f"schema_version: this cspnas reads version {SCHEMA_VERSION}, got {version!r}")
    _check_keys("", data, {"in_chs", "num_classes", "head_dropout", "stem", "stages"}, required={"stem", "stages"})
    stem_data = data["stem"]
    if not isinstance(stem_data, Mapping):
        raise ArchError("stem: must be an object")
    stem_data = dict(stem_data)
    _check_keys("stem.", stem_data, {f.name for f in fields(StemConfig)})
    if "out_chs" in stem_data:
        oc = stem_data["out_chs"]
        stem_data["out_chs"] = tuple(oc) if isinstance(oc, (list, tuple)) else (oc,)
    stages_data = data["stages"]
    if not isinstance(stages_data, list) or not stages_data:
        raise ArchError("stages: must be a non-empty list of stage objects")
    stage_fields = {f.name for f in fields(StageConfig)}
    stages = []
    for i, s in enumerate(stages_data):
        if not isinstance(s, Mapping):
            raise ArchError(f"stages[{i}]: must be an object")
        _check_keys(f"stages[{i}].", dict(s), stage_fields, required={"depth", "out_chs"})
        stages.append(StageConfig(**s))
    arch = ArchConfig(
        stem=StemConfig(**stem_data),
        stages=tuple(stages),
        **{k: data[k] for k in ("in_chs", "num_classes", "head_dropout") if k in data},
    )
    validate(arch)
    return arch


def _check_keys(prefix: str, data: Mapping, known: set[str], required: set[str] = frozenset()) -> None:
    for key in data:
        if key not in known:
            raise ArchError(f"{prefix}{key}: unknown field (known: {', '.join(sorted(known))})")
    for key in sorted(required):
        if key not in data:
            raise ArchError(f"{prefix}{key}: required field is missing")


def _int(path: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchError(f"{path}: must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ArchError(f"{path}: must be {rng}, got {value}")


def _float(path: str, value: Any, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArchError(f"{path}: must be a number, got {value!r}")
    bad = value <= lo if lo_open else value < lo
    bad = bad or (value >= hi if hi_open else value > hi)
    if bad:
        interval = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
        raise ArchError(f"{path}: must be in {interval}, got {value:g}")


def _choice(path: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ArchError(f"{path}: must be one of {', '.join(options)}, got {value!r}")


def _bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ArchError(f"{path}: must be true or false, got {value!r}")


def validate(arch: ArchConfig) -> None:
    """Raise ArchError naming the first offending field; returns None when the arch is buildable."""
    _int("in_chs", arch.in_chs, 1, 64)
    _int("num_classes", arch.num_classes, 2)
    _float("head_dropout", arch.head_dropout, 0.0, 1.0, lo_open=False, hi_open=True)
    st = arch.stem
    if not st.out_chs:
        raise ArchError("stem.out_chs: must list at least one conv width")
    for j, c in enumerate(st.out_chs):
        _int(f"stem.out_chs[{j}]", c, 1, 4096)
    _int("stem.kernel_size", st.kernel_size, 1, 11)
    if st.stride not in (1, 2, 4):
        raise ArchError(f"stem.stride: must be 1, 2 or 4, got {st.stride!r}")
    _bool("stem.pool", st.pool)
    if st.pool and st.stride != 4:
        raise ArchError("stem.pool: a max-pool stem needs stem.stride 4")
    if st.stride == 4 and not st.pool and len(st.out_chs) < 2:
        raise ArchError("stem.stride: stride 4 without pool needs at least two stem convs")
    _choice("stem.act", st.act, ACTIVATIONS)
    if len(arch.stages) > 8:
        raise ArchError(f"stages: at most 8 stages, got {len(arch.stages)}")
    prev = st.out_chs[-1]
    for i, s in enumerate(arch.stages):
        _validate_stage(f"stages[{i}]", s, prev)
        prev = s.out_chs


def _validate_stage(p: str, s: StageConfig, in_chs: int) -> None:
    _int(f"{p}.depth", s.depth, 1, 64)
    _int(f"{p}.out_chs", s.out_chs, 1, 8192)
    if s.stride not in (1, 2):
        raise ArchError(f"{p}.stride: must be 1 or 2, got {s.stride!r}")
    _choice(f"{p}.stage_type", s.stage_type, STAGE_TYPES)
    _choice(f"{p}.block_type", s.block_type, BLOCK_TYPES)
    _float(f"{p}.split_ratio", s.split_ratio, 0.0, 1.0, lo_open=True, hi_open=True)
    _float(f"{p}.expand_ratio", s.expand_ratio, 0.0, 8.0, lo_open=True, hi_open=False)
    _float(f"{p}.block_ratio", s.block_ratio, 0.0, 8.0, lo_open=True, hi_open=False)
    _float(f"{p}.bottle_ratio", s.bottle_ratio, 0.0, 8.0, lo_open=True, hi_open=False)
    _int(f"{p}.groups", s.groups, 1, 1024)
    _bool(f"{p}.down_growth", s.down_growth)
    _bool(f"{p}.cross_linear", s.cross_linear)
    _float(f"{p}.se_ratio", s.se_ratio, 0.0, 1.0, lo_open=False, hi_open=False)
    _choice(f"{p}.act", s.act, ACTIVATIONS)
    if s.block_type == "resnext" and s.groups < 2:
        raise ArchError(f"{p}.groups: resnext blocks need groups >= 2, got {s.groups}")
    plan = stage_channels(s, in_chs)
    if s.stage_type != "plain" and plan.exp_chs < 2:
        raise ArchError(f"{p}.expand_ratio: the expanded width round(out_chs * expand_ratio) = {plan.exp_chs} cannot be split; needs >= 2")
    if s.stage_type == "fusion_last" and plan.out_b_chs < 1:
        raise ArchError(
            f"{p}.split_ratio: fusion_last concatenates the skip part ({plan.skip_chs} ch) with the block part, "
            f"which leaves no room in out_chs={s.out_chs}; lower expand_ratio or raise split_ratio"
        )
    if plan.down_chs and s.groups > 1:
        for what, c in (("input", in_chs), ("down conv output", plan.down_chs)):
            if c % s.groups:
                raise ArchError(f"{p}.groups: {s.groups} groups must divide the {what} width {c}")
    if s.groups > 1 and s.block_type in ("bottleneck", "resnext", "dark"):
        # the grouped 3x3 sees mid -> mid (bottleneck) or mid -> out (dark)
        widths = plan.block_mid + (plan.block_out if s.block_type == "dark" else ())
        for w in widths:
            if w % s.groups:
                raise ArchError(f"{p}.groups: {s.groups} groups must divide every block width; {w} is not divisible")
    if s.groups > 1 and s.block_type in ("edge", "dense"):
        raise ArchError(f"{p}.groups: {s.block_type} blocks do not support groups; use groups 1")


# -- channel plan (shared by validator and builder) --------------------------------------------

def split_channels(total: int, ratio: float) -> int:
    """Channels of `total` that go through the blocks, by the documented rounding rule."""
    if total < 2:
        raise ArchError(f"cannot split {total} channel(s)")
    if total >= 2 * SPLIT_DIVISOR:
        block = int(round(total * ratio / SPLIT_DIVISOR)) * SPLIT_DIVISOR
        return min(max(block, SPLIT_DIVISOR), (total - 1) // SPLIT_DIVISOR * SPLIT_DIVISOR)
    return min(max(int(round(total * ratio)), 1), total - 1)


@dataclass(frozen=True)
class StagePlan:
    """Every width inside one stage; the builder uses exactly these numbers."""

    down_chs: int  # 0 when there is no down conv
    exp_chs: int  # width after the expansion conv (plain: = down_chs)
    block_in_chs: int  # width entering the block stack
    skip_chs: int  # width of the part that skips the blocks (0 for plain)
    block_chs_in: tuple[int, ...] = field(default=())  # per block: input width
    block_mid: tuple[int, ...] = field(default=())  # per block: inner width
    block_out: tuple[int, ...] = field(default=())  # per block: output width
    out_b_chs: int = 0  # width of the block part after its transition (csp/fusion_last)


def stage_channels(s: StageConfig, in_chs: int) -> StagePlan:
    """Channel arithmetic of a stage (timm-compatible for the published presets)."""
    has_down = s.stage_type == "plain" or s.stride != 1
    if s.stage_type == "plain":
        down = s.out_chs
        exp = down
        block_in, skip = down, 0
    else:
        down = (s.out_chs if s.down_growth else in_chs) if has_down else 0
        exp = max(int(round(s.out_chs * s.expand_ratio)), 1)
        if exp < 2:
            return StagePlan(down, exp, 1, 0)
        block_in = split_channels(exp, s.split_ratio)
        skip = exp - block_in
    ins, mids, outs = [], [], []
    c = block_in
    if s.block_type == "dense":
        growth = max(1, int(round(block_in * s.block_ratio / s.depth)))
        for _ in range(s.depth):
            ins.append(c)
            mids.append(max(1, int(round(c * s.bottle_ratio))))
            outs.append(c + growth)
            c += growth
    else:
        width = max(1, int(round(block_in * s.block_ratio)))
        for _ in range(s.depth):
            ins.append(c)
            mids.append(max(1, int(round(width * s.bottle_ratio))))
            outs.append(width)
            c = width
    if s.stage_type == "csp":
        out_b = block_in
    elif s.stage_type == "fusion_last":
        out_b = s.out_chs - skip
    elif s.stage_type == "fusion_first":
        out_b = c
    else:
        out_b = c
    return StagePlan(down, exp, block_in, skip, tuple(ins), tuple(mids), tuple(outs), out_b)
