"""Hand-designed baseline families: the documented scaling rule, applied the same way to every family."""
from __future__ import annotations

import pytest
import torch

from cspnas.models import build_model, load_arch
from cspnas.models.families import FAMILIES, MEMBERS, SIZES, family_member, members, stem_stride
from cspnas.models.presets import PRESETS


def test_every_family_is_a_curve_of_growing_members_built_by_the_rule():
    for name, fam in FAMILIES.items():
        preset = PRESETS[fam.preset]()
        sizes = []
        for size, width in SIZES.items():
            arch = family_member(name, size)
            kept = preset.stages[-3:]
            assert [s.stride for s in arch.stages] == [1, 2, 2] and arch.stem.stride == 1
            for got, src in zip(arch.stages, kept):
                assert got.out_chs % 8 == 0 and abs(got.out_chs - src.out_chs * width) <= 0.1 * src.out_chs * width + 4
                assert got.depth == max(1, int(src.depth * fam.depth_multiplier + 0.5))
                # the family's own design choices are the preset's, except where the family says otherwise
                expected_type = fam.stage_changes.get("stage_type", src.stage_type)
                assert (got.stage_type, got.block_type, got.split_ratio, got.act) == \
                       (expected_type, src.block_type, src.split_ratio, src.act)
            sizes.append(sum(p.numel() for p in build_model(arch).parameters()))
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), name  # a curve, not a point


def test_members_cover_the_default_space_widths_and_load_by_name():
    archs = members()
    assert set(archs) == set(MEMBERS) and len(archs) == len(FAMILIES) * len(SIZES)
    assert [s.out_chs for s in archs["cspdarknet-s"].stages] == [32, 64, 128]
    assert [s.out_chs for s in archs["cspdarknet-l"].stages] == [64, 128, 256]
    assert {s.stage_type for s in archs["resnet-m"].stages} == {"plain"}
    assert {s.stage_type for s in archs["cs3darknet-m"].stages} == {"fusion_first"}
    assert load_arch("cspresnet-s") == archs["cspresnet-s"]
    out = build_model("darknet-xs")(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_inputs_above_32px_get_a_strided_stem():
    assert stem_stride(16) == stem_stride(32) == 1 and stem_stride(64) == 2
    arch = family_member("cspdarknet", "s", input_size=64, num_classes=100)
    assert arch.stem.stride == 2 and arch.num_classes == 100
    assert build_model(arch)(torch.zeros(1, 3, 64, 64)).shape == (1, 100)


@pytest.mark.parametrize("bad", ["cspdarknet-xxl", "nofamily-s"])
def test_unknown_member_names_point_to_presets(bad):
    from cspnas.errors import CspnasError

    with pytest.raises(CspnasError, match="cspnas presets"):
        load_arch(bad)
