"""The block and stage type tables (cspnas.space.kinds), validation codes, and the space's special members."""
from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from cspnas.errors import ArchError
from cspnas.models.blocks import BLOCKS
from cspnas.space import ArchConfig, StageConfig, StemConfig, validate
from cspnas.space.arch import Code
from cspnas.space.footprint import footprint
from cspnas.space.kinds import BLOCK_KINDS, STAGE_KINDS, knob_applies
from cspnas.space.searchspace import _repair, load_space


@pytest.mark.parametrize("name", sorted(BLOCK_KINDS))
def test_the_table_describes_each_block_class(name):
    """The convs the table lists (which the validator and the memory estimate read) are the block's own."""
    kind = BLOCK_KINDS[name]
    groups = 2 if kind.takes_groups else 1
    cin, mid = 16, 8
    cout = cin + 8 if kind.width == "dense" else 32  # residual: a width change adds the projection shortcut
    block = BLOCKS[name](cin, cout, mid, groups=groups, act="relu", se_ratio=0.0)
    widths = {"in": cin, "mid": mid, "out": cout, "growth": cout - cin}
    convs = [m for n, m in block.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("shortcut")]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in convs] == [
        (widths[c.src], widths[c.dst], c.kernel, groups if c.grouped else 1) for c in kind.convs]
    assert hasattr(block, "shortcut") == (kind.width == "residual")


def test_letters_are_unique_and_summaries_use_them():
    assert len({k.letter for k in BLOCK_KINDS.values()}) == len(BLOCK_KINDS)
    assert len({k.letter for k in STAGE_KINDS.values()}) == len(STAGE_KINDS)
    arch = ArchConfig(stem=StemConfig(out_chs=(16,)), stages=(
        StageConfig(depth=1, out_chs=32, stage_type="fusion_last", block_type="edge", split_ratio=0.75),
        StageConfig(depth=2, out_chs=48, stage_type="plain", block_type="dense")))
    assert arch.summary() == "Le1x32@0.75 Pn2x48"


def test_conditional_knobs_follow_the_tables():
    assert knob_applies("groups", "csp", "resnext") and not knob_applies("groups", "csp", "dark")
    assert knob_applies("split_ratio", "fusion_first", "dark") and not knob_applies("split_ratio", "plain", "dark")
    assert knob_applies("bottle_ratio", "plain", "edge")


def _arch(*stages: StageConfig) -> ArchConfig:
    return ArchConfig(stem=StemConfig(out_chs=(16,)), stages=stages)


@pytest.mark.parametrize("stage,code,field", [
    (StageConfig(depth=1, out_chs=32, block_type="resnext", groups=1), Code.GROUPS_TOO_FEW, "groups"),
    (StageConfig(depth=1, out_chs=32, block_type="resnext", groups=3), Code.GROUPS_INDIVISIBLE, "groups"),
    (StageConfig(depth=1, out_chs=32, block_type="edge", groups=2), Code.GROUPS_UNSUPPORTED, "groups"),
    (StageConfig(depth=1, out_chs=16, stage_type="fusion_last", expand_ratio=2.0, split_ratio=0.25),
     Code.NO_ROOM, "split_ratio"),
    (StageConfig(depth=1, out_chs=32, split_ratio=1.5), Code.RANGE, "split_ratio"),
    (StageConfig(depth=1, out_chs=32, act="swish"), Code.CHOICE, "act"),
])
def test_validation_errors_carry_a_code_a_field_and_the_stage(stage, code, field):
    ok = StageConfig(depth=1, out_chs=32)
    with pytest.raises(ArchError) as info:
        validate(_arch(ok, stage))
    assert (info.value.code, info.value.field, info.value.stage) == (code, f"stages[1].{field}", 1)


def test_unknown_field_and_malformed_json_have_codes():
    with pytest.raises(ArchError) as info:
        ArchConfig.from_json('{"stem": {"out_chs": [8]}, "stages": [{"depth": 1, "out_chs": 8, "widht": 3}]}')
    assert (info.value.code, info.value.field) == (Code.UNKNOWN_FIELD, "stages[0].widht")
    with pytest.raises(ArchError) as info:
        ArchConfig.from_json("[" * 100_000 + "]" * 100_000)
    assert info.value.code == Code.MALFORMED and "nested too deeply" in str(info.value)


def test_repair_acts_on_codes_stage_by_stage():
    ok = StageConfig(depth=1, out_chs=32)
    bad_groups = StageConfig(depth=1, out_chs=48, block_type="resnext", groups=64)
    no_room = StageConfig(depth=1, out_chs=16, stage_type="fusion_last", expand_ratio=2.0, split_ratio=0.25)
    fixed = _repair(_arch(ok, bad_groups, no_room))
    validate(fixed)
    assert fixed.stages[0] == ok
    assert fixed.stages[1].block_type == "resnext" and 48 % fixed.stages[1].groups == 0 < fixed.stages[1].groups - 1
    assert fixed.stages[2] == dataclasses.replace(no_room, expand_ratio=1.0)


def test_largest_and_corners_live_in_the_space():
    space = load_space("default")
    big = space.largest(3, 10)
    assert [s.out_chs for s in big.stages] == [64, 128, 256] and all(s.stage_type == "csp" for s in big.stages)
    cheap, dear = space.corners(3, 10), space.corners(3, 10, cheapest=False)
    assert len(cheap) == len(dear) == 4 * 5  # one per (stage type, block type) of the default space
    for a, b in zip(cheap, dear):
        assert (a.stages[0].stage_type, a.stages[0].block_type) == (b.stages[0].stage_type, b.stages[0].block_type)
        assert footprint(a, 32).params < footprint(b, 32).params
        assert footprint(a, 32).activations < footprint(b, 32).activations
