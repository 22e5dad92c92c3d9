"""Generator: published presets match timm exactly; every stage x block type builds and trains."""
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from cspnas.errors import ArchError
from cspnas.models import PRESETS, build_model
from cspnas.space import ACTIVATIONS, BLOCK_TYPES, STAGE_TYPES, ArchConfig, StageConfig, StemConfig

REF = json.loads((Path(__file__).parent / "data" / "timm_reference.json").read_text())["models"]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(REF))
def test_preset_parameter_counts_equal_timm(name):
    # Reference numbers come from timm 1.0.31 (tests/data/timm_reference.json, see its _meta).
    model = build_model(name)
    assert n_params(model) == REF[name]["params"]
    per_child = {"stem": n_params(model.stem), "head": n_params(model.head)}
    per_child.update({f"stages.{i}": n_params(s) for i, s in enumerate(model.stages)})
    assert per_child == REF[name]["params_per_child"]


@pytest.mark.parametrize("name", sorted(REF))
def test_preset_counts_with_other_io(name):
    model = build_model(name, num_classes=10, in_chs=1)
    assert n_params(model) == REF[name]["params_10cls_1ch"]


def test_required_presets_are_listed():
    assert {"cspresnet50", "cspresnext50", "cspdarknet53", "darknet53", "cs3darknet_s", "cs3darknet_m"} <= set(PRESETS)


def tiny(stage_type, block_type, split=0.5, in_chs=3, out_chs=24, depth=2, **kw) -> ArchConfig:
    groups = 2 if block_type == "resnext" else 1
    return ArchConfig(
        stem=StemConfig(out_chs=(12,), stride=2),
        stages=(
            StageConfig(depth=depth, out_chs=out_chs, stride=1, stage_type=stage_type, block_type=block_type,
                        split_ratio=split, groups=groups, **kw),
            StageConfig(depth=1, out_chs=2 * out_chs, stride=2, stage_type=stage_type, block_type=block_type,
                        split_ratio=split, groups=groups, se_ratio=0.25, **kw),
        ),
        in_chs=in_chs, num_classes=5,
    )


@pytest.mark.parametrize("stage_type", STAGE_TYPES)
@pytest.mark.parametrize("block_type", BLOCK_TYPES)
@pytest.mark.parametrize("in_chs, size", [(1, 8), (3, 8), (1, 33), (3, 224)])
def test_every_stage_and_block_type_runs_forward_and_backward(stage_type, block_type, in_chs, size):
    model = build_model(tiny(stage_type, block_type, in_chs=in_chs))
    x = torch.randn(2, in_chs, size, size)
    y = model(x)
    assert y.shape == (2, 5)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("split", [0.1, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("out_chs", [5, 7, 24, 33, 100])
def test_any_split_ratio_works_for_odd_channel_counts(split, out_chs):
    for stage_type in ("csp", "fusion_first"):
        model = build_model(tiny(stage_type, "dark", split=split, out_chs=out_chs))
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_split_ratio_changes_the_network():
    small = n_params(build_model(tiny("csp", "dark", split=0.25, out_chs=64)))
    large = n_params(build_model(tiny("csp", "dark", split=0.75, out_chs=64)))
    assert small < large  # more channels through the blocks, more weights


def test_stride_one_stage_without_down_conv():
    arch = tiny("csp", "bottleneck")
    model = build_model(arch)
    assert isinstance(model.stages[0].conv_down, torch.nn.Identity)
    assert not isinstance(model.stages[1].conv_down, torch.nn.Identity)


def test_fusion_variants_cost_less_than_csp():
    # paper Fig. 3: fusion first / fusion last drop transition convs
    params = {t: n_params(build_model(tiny(t, "dark", out_chs=64))) for t in ("csp", "fusion_first", "fusion_last")}
    assert params["fusion_last"] < params["csp"] and params["fusion_first"] < params["csp"]


def test_build_model_from_json_file(tmp_path):
    path = tmp_path / "arch.json"
    arch = tiny("fusion_last", "edge")
    path.write_text(arch.to_json())
    model = build_model(path)
    assert model.arch == arch


stage_strategy = st.builds(
    StageConfig,
    depth=st.integers(1, 3),
    out_chs=st.integers(2, 96),
    stride=st.sampled_from([1, 2]),
    stage_type=st.sampled_from(STAGE_TYPES),
    block_type=st.sampled_from(BLOCK_TYPES),
    split_ratio=st.floats(0.01, 0.99),
    expand_ratio=st.sampled_from([0.5, 1.0, 2.0]),
    block_ratio=st.sampled_from([0.5, 1.0, 1.5]),
    bottle_ratio=st.sampled_from([0.25, 0.5, 1.0]),
    groups=st.sampled_from([1, 1, 2, 4]),
    down_growth=st.booleans(),
    cross_linear=st.booleans(),
    se_ratio=st.sampled_from([0.0, 0.25]),
    act=st.sampled_from(ACTIVATIONS),
)
arch_strategy = st.builds(
    ArchConfig,
    stem=st.builds(StemConfig, out_chs=st.lists(st.integers(1, 32), min_size=1, max_size=2).map(tuple),
                   kernel_size=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]), pool=st.just(False)),
    stages=st.lists(stage_strategy, min_size=1, max_size=4).map(tuple),
    in_chs=st.sampled_from([1, 3]),
    num_classes=st.integers(2, 12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=arch_strategy, size=st.sampled_from([8, 17, 32]))
def test_random_configs_build_and_run_or_are_rejected_with_the_field(arch, size):
    try:
        model = build_model(arch)
    except ArchError as e:
        assert str(e).startswith(("stages[", "stem.", "in_chs", "num_classes")), str(e)
        return
    y = model(torch.randn(2, arch.in_chs, size, size))
    assert y.shape == (2, arch.num_classes)
    y.sum().backward()
    assert ArchConfig.from_json(arch.to_json()) == arch


@pytest.mark.parametrize("name", sorted(REF))
def test_preset_fvcore_macs_equal_timm(name):
    from cspnas.cost import count_macs

    assert count_macs(build_model(name), in_chs=3, input_size=224).total == REF[name]["fvcore_total_224"]


def test_inspect_cli_reports_the_published_numbers(capsys):
    from cspnas.cli import main

    assert main(["inspect", "cspresnet50", "--input-size", "224", "--num-classes", "1000", "--json",
                 "--no-latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 21_616_168 and out["macs"] == 3_476_414_464
    assert "latency_ms" not in out
    assert sum(s["params"] for s in out["stages"]) + out["stem"]["params"] + out["head"]["params"] == out["params"]
