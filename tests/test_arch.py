"""Architecture config: JSON round trip, canonical hash, field-level validation."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from cspnas.errors import ArchError
from cspnas.models import PRESETS
from cspnas.space import ArchConfig, StageConfig, StemConfig, split_channels


def small_arch(**stage_kw) -> ArchConfig:
    return ArchConfig(stem=StemConfig(out_chs=(16,)), stages=(StageConfig(depth=1, out_chs=32, **stage_kw),))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    arch = PRESETS[name]()
    again = ArchConfig.from_json(arch.to_json())
    assert again == arch
    assert again.arch_hash() == arch.arch_hash()


def test_hash_ignores_key_order_and_float_spelling():
    d = small_arch(split_ratio=0.25).to_dict()
    text = json.dumps(d).replace('"split_ratio": 0.25', '"split_ratio": 2.5e-1')
    assert "2.5e-1" in text
    shuffled = dict(reversed(list(json.loads(text).items())))
    assert ArchConfig.from_dict(shuffled).arch_hash() == small_arch(split_ratio=0.25).arch_hash()
    # integers spelled as floats are the same value
    d2 = small_arch(expand_ratio=1).to_dict()
    assert ArchConfig.from_dict(d2).arch_hash() == small_arch(expand_ratio=1.0).arch_hash()


def test_hash_differs_for_different_networks_and_ignores_dead_fields():
    assert small_arch(split_ratio=0.25).arch_hash() != small_arch(split_ratio=0.75).arch_hash()
    # split/expand settings have no effect on a plain stage: same network, same hash
    assert small_arch(stage_type="plain", split_ratio=0.25).arch_hash() == small_arch(stage_type="plain").arch_hash()


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][0].update(split_ratio=1.5), "stages[0].split_ratio: must be in (0, 1), got 1.5"),
    (lambda d: d["stages"][0].update(split_ratio=0), "stages[0].split_ratio"),
    (lambda d: d["stages"][0].update(depth=0), "stages[0].depth"),
    (lambda d: d["stages"][0].update(depth=1.5), "stages[0].depth: must be an integer"),
    (lambda d: d["stages"][0].update(stage_type="cs9"), "stages[0].stage_type: must be one of"),
    (lambda d: d["stages"][0].update(block_type="vit"), "stages[0].block_type"),
    (lambda d: d["stages"][0].update(bogus=1), "stages[0].bogus: unknown field"),
    (lambda d: d["stages"][0].pop("out_chs"), "stages[0].out_chs: required field"),
    (lambda d: d["stages"][0].update(act="swish9"), "stages[0].act"),
    (lambda d: d["stages"][0].update(stride=3), "stages[0].stride"),
    (lambda d: d["stages"][0].update(block_type="resnext", groups=1), "stages[0].groups: resnext blocks need groups >= 2"),
    (lambda d: d["stages"][0].update(block_type="resnext", groups=5), "stages[0].groups: 5 groups must divide"),
    (lambda d: d["stages"][0].update(stage_type="fusion_last", expand_ratio=4.0, split_ratio=0.1), "stages[0].split_ratio: fusion_last"),
    (lambda d: d["stem"].update(stride=3), "stem.stride"),
    (lambda d: d["stem"].update(pool=True), "stem.pool"),
    (lambda d: d["stem"].update(out_chs=[]), "stem.out_chs"),
    (lambda d: d.update(num_classes=1), "num_classes"),
    (lambda d: d.update(in_chs=0), "in_chs"),
    (lambda d: d.update(stages=[]), "stages: must be a non-empty list"),
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d.update(extra=True), "extra: unknown field"),
])
def test_invalid_configs_name_the_field(mutate, field):
    d = small_arch().to_dict()
    mutate(d)
    with pytest.raises(ArchError) as e:
        ArchConfig.from_dict(d)
    assert str(e.value).startswith(field.split(":")[0])
    assert field in str(e.value)


def test_malformed_json_is_an_arch_error():
    with pytest.raises(ArchError, match="malformed"):
        ArchConfig.from_json("{not json")


@given(total=st.integers(2, 4096), ratio=st.floats(0.001, 0.999))
def test_split_keeps_both_parts_whole_and_nonempty(total, ratio):
    block = split_channels(total, ratio)
    assert 1 <= block <= total - 1
    if total >= 16:
        assert block % 8 == 0  # documented rule: multiples of 8 when the total allows
        admissible = range(8, total, 8)
        assert abs(block - total * ratio) <= min(abs(a - total * ratio) for a in admissible) + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["split_ratio", "expand_ratio", "depth", "groups", "out_chs", "stride"]),
                       st.one_of(st.integers(-3, 300), st.floats(-1, 3), st.just(float("nan")), st.text(max_size=3),
                                 st.none(), st.booleans()), max_size=3))
def test_any_field_garbage_is_rejected_by_name_or_accepted(changes):
    d = small_arch().to_dict()
    d["stages"][0].update(changes)
    try:
        arch = ArchConfig.from_dict(d)
    except ArchError as e:
        assert str(e).startswith(("stages[0].", "stem.")), str(e)
    else:
        assert arch.stages[0].depth >= 1
