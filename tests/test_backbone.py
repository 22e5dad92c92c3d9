"""CSP networks as backbones: `build_model(..., features_only=True)` and `cspnas export --backbone`."""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

import cspnas
from cspnas.cli import main
from cspnas.errors import CspnasError
from cspnas.models import build_model
from run_fixture import make_run

TIMM = json.loads((Path(__file__).parent / "data" / "timm_reference.json").read_text())["models"]


@pytest.mark.parametrize("name", sorted(TIMM))
def test_feature_info_and_maps_match_timm(name):
    """Channels, reductions and module names equal timm 1.0.31's feature_info, and the maps have them."""
    ref = TIMM[name]["feature_info"]
    model = cspnas.build_model(name, features_only=True).eval()
    assert model.feature_info.channels() == [f["num_chs"] for f in ref]
    assert model.feature_info.reduction() == [f["reduction"] for f in ref]
    assert model.feature_info.module_name() == [f["module"] for f in ref]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 64 // r, 64 // r) for c, r in
                                                  zip(model.feature_info.channels(), model.feature_info.reduction())]


def test_out_indices_select_levels_and_drop_what_is_not_needed():
    net = build_model("cspdarknet53").eval()
    x = torch.randn(2, 3, 64, 64)
    full = net.features()
    part = build_model("cspdarknet53", features_only=True, out_indices=(2, 3))
    assert part.feature_info.reduction() == [4, 8] and len(part.stages) == 3  # stages 3 and 4 are not built
    assert not any(k.startswith("head") for k in part.state_dict())
    part.load_state_dict({k: v for k, v in net.state_dict().items() if k in part.state_dict()})  # same names
    with torch.no_grad():
        maps_full, maps_part = full(x), part.eval()(x)
        assert torch.equal(maps_full[-1], net.forward_features(x))  # the classifier's own feature map
    for a, b in zip(maps_full[2:4], maps_part):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [(), (3, 2), (1, 1), (-1,), (9,), (True,)])
def test_bad_out_indices_are_one_line_errors(bad):
    with pytest.raises(CspnasError, match=r"out_indices .*0\.\.5"):
        build_model("cspdarknet53", features_only=True, out_indices=bad)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), 6)


def test_export_backbone_torchscript_and_multi_output_onnx(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bb"
    assert main(["export", str(run_dir), "--pick", "best", "--backbone", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "backbone.ts: max abs diff" in printed and "backbone.onnx: max abs diff" in printed
    assert printed.count("ok, tolerance") == 2
    assert sorted(p.name for p in out.iterdir()) == ["MODEL.md", "arch.json", "backbone.onnx", "backbone.ts",
                                                     "weights.safetensors"]
    net = build_model(out / "arch.json").eval()
    net.load_state_dict(load_file(out / "weights.safetensors"))
    backbone = net.features().eval()
    x = torch.randn(3, net.arch.in_chs, 8, 8, generator=torch.Generator().manual_seed(1))  # batch 3: dynamic axis
    with torch.no_grad():
        expected = [m.numpy() for m in backbone(x)]
        scripted = torch.jit.load(str(out / "backbone.ts"))(x)
    assert len(expected) == len(backbone.feature_info) >= 2 and max(np.abs(e).max() for e in expected) > 0.1
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"features_{i}" for i in range(len(expected))]
    got = session.run(None, {"input": x.numpy()})
    for e, s, o in zip(expected, scripted, got):
        assert e.shape == o.shape == tuple(s.shape)
        assert np.abs(s.numpy() - e).max() < 1e-4 and np.abs(o - e).max() < 1e-4

    card = (out / "MODEL.md").read_text()
    assert "## Backbone" in card and "| `features_0` |" in card
    snippet = card.split("## Backbone")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(compile(snippet, "MODEL.md", "exec"), scope)
    assert [tuple(f.shape[1:2]) for f in scope["features"]] == [(c,) for c in backbone.feature_info.channels()]

