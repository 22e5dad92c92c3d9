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
from cspnas.space.kinds import BLOCK_KINDS, SPLIT_KNOBS, STAGE_KINDS

SCHEMA_VERSION = 1

STAGE_TYPES = tuple(STAGE_KINDS)
BLOCK_TYPES = tuple(BLOCK_KINDS)
ACTIVATIONS = ("relu", "leaky_relu", "silu", "mish", "hardswish", "relu6", "gelu")

# Splitting rule (documented in README): when the total has >= 16 channels, the part that
# goes through the blocks is the multiple of SPLIT_DIVISOR nearest to total * ratio (clamped
# so the skip part keeps >= 1 channel); below 16 it is the nearest whole channel in
# [1, total - 1]. Both parts are always whole and non-empty.
SPLIT_DIVISOR = 8


class Code:
    """What an ArchError is about (its `code`), so callers can react without reading messages."""

    MALFORMED = "malformed"  # not JSON, not an object, too deeply nested
    SCHEMA_VERSION = "schema_version"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    TYPE = "type"  # wrong JSON type
    RANGE = "range"  # a number outside its bounds
    CHOICE = "choice"  # not one of the allowed names or values
    STEM = "stem"  # stem fields that do not fit together (pool, stride, convs)
    UNSPLITTABLE = "unsplittable"  # the expanded width is below 2 channels
    NO_ROOM = "no_room"  # fusion_last: the skip part leaves no channels for the block part
    GROUPS_TOO_FEW = "groups_too_few"  # the block type needs more groups (resnext: >= 2)
    GROUPS_INDIVISIBLE = "groups_indivisible"  # groups do not divide a width they split
    GROUPS_UNSUPPORTED = "groups_unsupported"  # the block type has no grouped conv


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

    def conv_strides(self) -> tuple[int, ...]:
        """Each conv's stride (timm's rule): the first strides when stride > 1, the last one too for
        stride 4 without pool."""
        last = len(self.out_chs) - 1
        return tuple(2 if (i == 0 and self.stride > 1) or (i == last and self.stride > 2 and not self.pool) else 1
                     for i in range(len(self.out_chs)))


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
        return arch_from_dict(parse_json(text, "architecture JSON"))

    # -- identity -------------------------------------------------------------------------
    def canonical(self) -> "ArchConfig":
        """The same network with fields that have no effect reset to defaults (for hashing)."""
        unsplit = {k: _STAGE_DEFAULTS[k] for k in SPLIT_KNOBS}
        stages = tuple(s if STAGE_KINDS[s.stage_type].split else replace(s, **unsplit) for s in self.stages)
        return replace(self, stages=stages)

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

    def feature_levels(self) -> list[dict[str, Any]]:
        """The feature maps a backbone offers, as timm's `feature_info`: the last map at each reduction
        (input size / map size), from the stem's convs and pool and every stage; `module` names it."""
        maps, reduction = [], 1
        for i, (chs, stride) in enumerate(zip(self.stem.out_chs, self.stem.conv_strides())):
            reduction *= stride
            maps.append({"num_chs": chs, "reduction": reduction, "module": f"stem.conv{i + 1}"})
        if self.stem.pool:
            reduction *= 2
            maps.append({"num_chs": self.stem.out_chs[-1], "reduction": reduction, "module": "stem.pool"})
        for i, s in enumerate(self.stages):
            reduction *= s.stride
            maps.append({"num_chs": s.out_chs, "reduction": reduction, "module": f"stages.{i}"})
        return [m for m, after in zip(maps, maps[1:] + [None]) if after is None or after["reduction"] != m["reduction"]]

    def summary(self) -> str:
        """Compact one-line description, e.g. 'csp/dark d1-2-8 w64-128-256 s.50'."""
        parts = [
            f"{STAGE_KINDS[s.stage_type].letter}{BLOCK_KINDS[s.block_type].letter}{s.depth}x{s.out_chs}"
            + (f"@{s.split_ratio:.2f}" if STAGE_KINDS[s.stage_type].split else "")
            for s in self.stages
        ]
        return " ".join(parts)


_STAGE_DEFAULTS = {f.name: f.default for f in fields(StageConfig)}


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

def parse_json(text: str, origin: str) -> Any:
    """json.loads with one-line errors; `origin` names the source (a path) in them."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchError(f"{origin}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}",
                        code=Code.MALFORMED) from None
    except RecursionError:  # the decoder recurses per level: a hostile file must not become a traceback
        raise ArchError(f"{origin}: JSON nested too deeply to read; an architecture nests 4 levels "
                        "(object, stages list, stage object, stem list)", code=Code.MALFORMED) from None


def arch_from_dict(data: Any) -> ArchConfig:
    """Parse the JSON form, naming the offending field on any error."""
    if not isinstance(data, Mapping):
        raise ArchError(f"architecture: must be a JSON object, got {type(data).__name__}", code=Code.MALFORMED)
    data = dict(data)
    version = data.pop("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ArchError(f"schema_version: this cspnas reads version {SCHEMA_VERSION}, got {version!r}",
                        code=Code.SCHEMA_VERSION, field="schema_version")
    _check_keys("", data, {"in_chs", "num_classes", "head_dropout", "stem", "stages"}, required={"stem", "stages"})
    stem_data = data["stem"]
    if not isinstance(stem_data, Mapping):
        raise ArchError("stem: must be an object", code=Code.TYPE, field="stem")
    stem_data = dict(stem_data)
    _check_keys("stem.", stem_data, {f.name for f in fields(StemConfig)})
    if "out_chs" in stem_data:
        oc = stem_data["out_chs"]
        stem_data["out_chs"] = tuple(oc) if isinstance(oc, (list, tuple)) else (oc,)
    stages_data = data["stages"]
    if not isinstance(stages_data, list) or not stages_data:
        raise ArchError("stages: must be a non-empty list of stage objects", code=Code.TYPE, field="stages")
    stage_fields = {f.name for f in fields(StageConfig)}
    stages = []
    for i, s in enumerate(stages_data):
        if not isinstance(s, Mapping):
            raise ArchError(f"stages[{i}]: must be an object", code=Code.TYPE, field=f"stages[{i}]", stage=i)
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
            raise ArchError(f"{prefix}{key}: unknown field (known: {', '.join(sorted(known))})",
                            code=Code.UNKNOWN_FIELD, field=f"{prefix}{key}")
    for key in sorted(required):
        if key not in data:
            raise ArchError(f"{prefix}{key}: required field is missing", code=Code.MISSING_FIELD,
                            field=f"{prefix}{key}")


def _int(path: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchError(f"{path}: must be an integer, got {value!r}", code=Code.TYPE, field=path)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ArchError(f"{path}: must be {rng}, got {value}", code=Code.RANGE, field=path)


def _float(path: str, value: Any, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArchError(f"{path}: must be a number, got {value!r}", code=Code.TYPE, field=path)
    bad = value <= lo if lo_open else value < lo
    bad = bad or (value >= hi if hi_open else value > hi)
    if bad:
        interval = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
        raise ArchError(f"{path}: must be in {interval}, got {value:g}", code=Code.RANGE, field=path)


def _choice(path: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ArchError(f"{path}: must be one of {', '.join(map(str, options))}, got {value!r}", code=Code.CHOICE,
                        field=path)


def _bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ArchError(f"{path}: must be true or false, got {value!r}", code=Code.TYPE, field=path)


def validate(arch: ArchConfig) -> None:
    """Raise ArchError naming the first offending field; returns None when the arch is buildable."""
    _int("in_chs", arch.in_chs, 1, 64)
    _int("num_classes", arch.num_classes, 2)
    _float("head_dropout", arch.head_dropout, 0.0, 1.0, lo_open=False, hi_open=True)
    st = arch.stem
    if not st.out_chs:
        raise ArchError("stem.out_chs: must list at least one conv width", code=Code.TYPE, field="stem.out_chs")
    for j, c in enumerate(st.out_chs):
        _int(f"stem.out_chs[{j}]", c, 1, 4096)
    _int("stem.kernel_size", st.kernel_size, 1, 11)
    _choice("stem.stride", st.stride, (1, 2, 4))
    _bool("stem.pool", st.pool)
    if st.pool and st.stride != 4:
        raise ArchError("stem.pool: a max-pool stem needs stem.stride 4", code=Code.STEM, field="stem.pool")
    if st.stride == 4 and not st.pool and len(st.out_chs) < 2:
        raise ArchError("stem.stride: stride 4 without pool needs at least two stem convs", code=Code.STEM,
                        field="stem.stride")
    _choice("stem.act", st.act, ACTIVATIONS)
    if len(arch.stages) > 8:
        raise ArchError(f"stages: at most 8 stages, got {len(arch.stages)}", code=Code.RANGE, field="stages")
    prev = st.out_chs[-1]
    for i, s in enumerate(arch.stages):
        try:
            _validate_stage(f"stages[{i}]", s, prev)
        except ArchError as e:
            e.stage = i  # the helpers know the field path, not which stage it belongs to
            raise
        prev = s.out_chs


def _validate_stage(p: str, s: StageConfig, in_chs: int) -> None:
    _int(f"{p}.depth", s.depth, 1, 64)
    _int(f"{p}.out_chs", s.out_chs, 1, 8192)
    _choice(f"{p}.stride", s.stride, (1, 2))
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
    kind = BLOCK_KINDS[s.block_type]
    groups = f"{p}.groups"
    if s.groups < kind.min_groups:
        raise ArchError(f"{groups}: {s.block_type} blocks need groups >= {kind.min_groups}, got {s.groups}",
                        code=Code.GROUPS_TOO_FEW, field=groups)
    if s.groups > 1 and not kind.takes_groups:
        raise ArchError(f"{groups}: {s.block_type} blocks do not support groups; use groups 1",
                        code=Code.GROUPS_UNSUPPORTED, field=groups)
    plan = stage_channels(s, in_chs)
    if STAGE_KINDS[s.stage_type].split and plan.exp_chs < 2:
        raise ArchError(f"{p}.expand_ratio: the expanded width round(out_chs * expand_ratio) = {plan.exp_chs} "
                        "cannot be split; needs >= 2", code=Code.UNSPLITTABLE, field=f"{p}.expand_ratio")
    if s.stage_type == "fusion_last" and plan.out_b_chs < 1:
        raise ArchError(
            f"{p}.split_ratio: fusion_last concatenates the skip part ({plan.skip_chs} ch) with the block part, "
            f"which leaves no room in out_chs={s.out_chs}; lower expand_ratio or raise split_ratio",
            code=Code.NO_ROOM, field=f"{p}.split_ratio")
    if plan.down_chs and s.groups > 1:
        for what, c in (("input", in_chs), ("down conv output", plan.down_chs)):
            if c % s.groups:
                raise ArchError(f"{groups}: {s.groups} groups must divide the {what} width {c}",
                                code=Code.GROUPS_INDIVISIBLE, field=groups)
    if s.groups > 1:
        for w in _grouped_widths(kind, plan):
            if w % s.groups:
                raise ArchError(f"{groups}: {s.groups} groups must divide every block width; {w} is not divisible",
                                code=Code.GROUPS_INDIVISIBLE, field=groups)


def _grouped_widths(kind, plan: "StagePlan") -> list[int]:
    """Every width a grouped conv of the stage's blocks maps from or to."""
    named = {"in": plan.block_chs_in, "mid": plan.block_mid, "out": plan.block_out}
    return [w for conv in kind.convs if conv.grouped for end in (conv.src, conv.dst) for w in named[end]]


# -- channel plan (shared by validator and builder) --------------------------------------------

def split_channels(total: int, ratio: float) -> int:
    """Channels of `total` that go through the blocks, by the documented rounding rule."""
    if total < 2:
        raise ArchError(f"cannot split {total} channel(s)", code=Code.UNSPLITTABLE)
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
    split = STAGE_KINDS[s.stage_type].split
    has_down = not split or s.stride != 1
    if not split:
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
    if BLOCK_KINDS[s.block_type].width == "dense":
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
