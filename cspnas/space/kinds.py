"""The stage and block types as data: everything the space knows about each one, in one table.

Validation, the channel plan, summaries, hashing, search-space sampling and the memory
footprint all read these tables; `cspnas.models.blocks.BLOCKS` maps each block name to its
module class and checks at import that both name the same types. A new block type is one row
here, one class there, and its name in a search-space YAML.
"""
from __future__ import annotations

from dataclasses import dataclass

# Per-stage knobs that only exist for stages that split their channels (not for plain stages).
SPLIT_KNOBS = ("split_ratio", "expand_ratio", "down_growth", "cross_linear")


@dataclass(frozen=True)
class Conv:
    """One convolution of a block, by the widths it maps between: 'in', 'mid', 'out' or 'growth'
    (dense: the new channels, out - in). `grouped`: it takes the stage's `groups`."""

    src: str
    dst: str
    kernel: int
    grouped: bool = False


@dataclass(frozen=True)
class BlockKind:
    letter: str  # in arch summaries (README "Architecture summaries")
    convs: tuple[Conv, ...]  # in order; squeeze-excite (se_ratio > 0) acts on the 'mid' width after the first
    width: str  # "residual": every block has one width, added to a (projected) shortcut;
    #             "dense": each block concatenates width * block_ratio / depth new channels
    min_groups: int = 1  # resnext: a grouped 3x3 is what makes it a resnext block
    knobs: tuple[str, ...] = ()  # conditional knobs a search samples only for this block type

    @property
    def takes_groups(self) -> bool:
        return any(c.grouped for c in self.convs)


@dataclass(frozen=True)
class StageKind:
    letter: str
    split: bool  # splits channels into a block part and a skip part (the SPLIT_KNOBS apply)
    transition_b: bool = False  # a 1x1 transition on the block part before the concatenation
    transition: bool = False  # a 1x1 transition after the concatenation


_BOTTLENECK = (Conv("in", "mid", 1), Conv("mid", "mid", 3, grouped=True), Conv("mid", "out", 1))

BLOCK_KINDS: dict[str, BlockKind] = {
    "bottleneck": BlockKind("b", _BOTTLENECK, "residual"),
    "resnext": BlockKind("x", _BOTTLENECK, "residual", min_groups=2, knobs=("groups",)),
    "dark": BlockKind("d", (Conv("in", "mid", 1), Conv("mid", "out", 3, grouped=True)), "residual"),
    "edge": BlockKind("e", (Conv("in", "mid", 3), Conv("mid", "out", 1)), "residual"),
    "dense": BlockKind("n", (Conv("in", "mid", 1), Conv("mid", "growth", 3)), "dense"),
}

STAGE_KINDS: dict[str, StageKind] = {
    "csp": StageKind("C", split=True, transition_b=True, transition=True),
    "fusion_first": StageKind("F", split=True, transition=True),
    "fusion_last": StageKind("L", split=True, transition_b=True),
    "plain": StageKind("P", split=False),  # maps back to out_chs only when its blocks change the width
}

# knobs that exist only for some stage or block types (conditional parameters of a search)
CONDITIONAL_KNOBS = frozenset(SPLIT_KNOBS).union(*(k.knobs for k in BLOCK_KINDS.values()))


def knob_applies(knob: str, stage_type: str, block_type: str) -> bool:
    """Whether a search samples `knob` for a stage of these types."""
    if knob not in CONDITIONAL_KNOBS:
        return True
    return (knob in SPLIT_KNOBS and STAGE_KINDS[stage_type].split) or knob in BLOCK_KINDS[block_type].knobs
