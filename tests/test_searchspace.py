"""Search spaces: YAML validation with field-level errors, size, define-by-run sampling."""
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from cspnas.errors import CspnasError
from cspnas.models import build_model
from cspnas.space import validate
from cspnas.space.searchspace import bundled_spaces, load_space, parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


def test_bundled_spaces_are_the_top_level_yaml_files():
    names = set(bundled_spaces())
    assert {"default", "edge"} <= names
    assert names == {p.stem for p in (REPO / "search_spaces").glob("*.yaml")}


@pytest.mark.parametrize("name", ["default", "edge", "families"])
@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler(seed=3), optuna.samplers.TPESampler(seed=3)])
def test_sampling_always_yields_valid_buildable_archs(name, sampler):
    space = load_space(name)
    study = optuna.create_study(sampler=sampler)
    seen = set()
    for i in range(60):
        trial = study.ask()
        arch = space.sample(trial, in_chs=1, num_classes=10)
        validate(arch)
        seen.add(arch.arch_hash())
        if i % 15 == 0:
            build_model(arch)
        study.tell(trial, float(i % 7))
    assert len(seen) > 30  # the sampler explores, it doesn't repeat one arch


def test_sampling_is_conditional():
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(80):
        trial = study.ask()
        arch = space.sample(trial, in_chs=3, num_classes=10)
        for i, s in enumerate(arch.stages):
            assert (f"s{i}.split_ratio" in trial.params) == (s.stage_type != "plain")
            assert (f"s{i}.groups" in trial.params) == (trial.params[f"s{i}.block_type"] == "resnext")
        study.tell(trial, 0.0)


def test_resnext_groups_are_repaired_not_rejected():
    text = """
stages:
  - {depth: 1, out_chs: 20, stride: 1, block_type: resnext, groups: 16, stage_type: csp, split_ratio: 0.5}
"""
    space = parse_space(text)
    study = optuna.create_study()
    arch = space.sample(study.ask(), in_chs=3, num_classes=10)
    s = arch.stages[0]
    assert (s.block_type, s.groups) in {("resnext", 2), ("resnext", 4), ("resnext", 8), ("bottleneck", 1)}
    build_model(arch)


def test_size_counts_conditional_knobs():
    text = """
stem: {out_chs: [8, 16]}
stages:
  - {depth: {min: 1, max: 3}, out_chs: 16, stage_type: [csp, plain], split_ratio: [0.25, 0.5, 0.75]}
network: {act: [relu, silu]}
"""
    # stem 2 x act 2 x depth 3 x (csp: 3 splits + plain: 1) = 48
    assert parse_space(text).size() == 48


@pytest.mark.parametrize("text, where", [
    ("stages: [\n", "malformed YAML at line"),
    ("- 1\n- 2\n", "top level: must be a mapping"),
    ("stem: {}\n", "stages: required"),
    ("stages: []\n", "stages: must be a non-empty list"),
    ("stages:\n  - {depth: 1}\n", "stages[0].out_chs: required"),
    ("stages:\n  - {depth: 1, out_chs: 8, bogus: 1}\n", "stages[0].bogus: unknown key"),
    ("stages:\n  - {depth: 1, out_chs: 8}\nper_stage: {split_ratio: [0.5, 1.5]}\n", "per_stage.split_ratio[1]: must be a number in (0, 1), got 1.5"),
    ("stages:\n  - {depth: {min: 3, max: 1}, out_chs: 8}\n", "stages[0].depth: range needs integers with min <= max"),
    ("stages:\n  - {depth: {lo: 1, hi: 2}, out_chs: 8}\n", "a range is written {min: a, max: b}"),
    ("stages:\n  - {depth: 1, out_chs: [8, 8]}\n", "choices contain duplicates"),
    ("stages:\n  - {depth: 1, out_chs: 8, stage_type: cs9}\n", "stages[0].stage_type: must be one of"),
    ("stages:\n  - {depth: 1, out_chs: 8}\nnetwork: {act: swish}\n", "network.act: must be one of"),
    ("stages:\n  - {depth: 1, out_chs: 8}\nextra: 1\n", "extra: unknown key"),
    ("stages:\n  - {depth: 1, out_chs: []}\n", "choice list is empty"),
])
def test_bad_yaml_is_rejected_with_the_field(text, where):
    with pytest.raises(CspnasError) as e:
        parse_space(text, origin="space.yaml")
    assert str(e.value).startswith("space.yaml: ")
    assert where in str(e.value)


@pytest.mark.slow
def test_bundled_spaces_ship_in_a_non_editable_install(tmp_path):
    """Build the wheel and import from it (not the checkout): the YAML files must be inside."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(REPO)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("cspnas-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import cspnas, sys; from cspnas.space.searchspace import load_space; "
            "assert cspnas.__file__.startswith(sys.argv[1]), cspnas.__file__; "
            "print(load_space('default').size(), load_space('edge').size())")
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(load_space("default").size()), str(load_space("edge").size())]


def test_bundled_spaces_found_from_a_plain_checkout(tmp_path):
    """Experiments run from a checkout on PYTHONPATH, not installed: the YAMLs beside cspnas/ are used.

    ``-S`` skips site-packages' .pth files, so the editable install's import hook is not there;
    only yaml's folder is put on the path.
    """
    import yaml

    code = ("import cspnas, sys; from cspnas.space.searchspace import bundled_spaces, load_space; "
            "assert cspnas.__file__.startswith(sys.argv[1]), cspnas.__file__; "
            "print(sorted(bundled_spaces()), load_space('default').size())")
    path = [str(REPO), str(Path(yaml.__file__).parents[1])]
    out = subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": ":".join(path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    shipped = sorted(f.stem for f in (REPO / "search_spaces").glob("*.yaml"))
    assert out.stdout.strip() == f"{shipped} {load_space('default').size()}"
