"""Zero-cost scores (cspnas.cost.zero_cost): deterministic, sensible, and the caller's model untouched."""
import math
from dataclasses import replace

import pytest
import torch

from cspnas.cost.zero_cost import COLUMNS, SCORES, parse_prefilter, zero_cost_scores
from cspnas.data import load_dataset
from cspnas.errors import CspnasError
from cspnas.models import build_model
from cspnas.train.quantized import calibration_batch, image_batch
from run_fixture import arch_from_params

PARAMS = {"act": "silu", "s0.stage_type": "csp", "s0.split_ratio": 0.5, "s0.depth": 1,
          "s1.stage_type": "fusion_last", "s1.split_ratio": 0.5, "s1.depth": 2}


@pytest.fixture(scope="module")
def batch():
    return image_batch(load_dataset("digits", split_seed=0), 16, seed=0)


def model(arch=None):
    torch.manual_seed(0)
    return build_model(arch or arch_from_params(PARAMS))


def test_scores_are_sensible_deterministic_and_leave_the_model_alone(batch):
    net = model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = zero_cost_scores(net, *batch)
    assert set(first) == set(COLUMNS) == {f"zc_{n}" for n in ("synflow", "naswot", "grad_norm", "params")}
    assert first["zc_synflow"] > 0 and first["zc_grad_norm"] > 0
    assert math.isfinite(first["zc_naswot"]) and first["zc_naswot"] > 0  # log|K|, K's diagonal = all units
    assert first["zc_params"] == sum(p.numel() for p in net.parameters())
    # the model is untouched (weights, BN statistics, no gradients, float32), and a second call agrees
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.dtype == torch.float32 for p in net.parameters())
    assert zero_cost_scores(net, *batch) == first
    assert zero_cost_scores(model(), *batch) == first  # a function of the architecture and the batch


def test_a_wider_net_scores_higher_on_params_and_synflow(batch):
    arch = arch_from_params(PARAMS)
    wide = replace(arch, stages=tuple(replace(s, out_chs=2 * s.out_chs) for s in arch.stages))
    narrow_scores, wide_scores = zero_cost_scores(model(arch), *batch), zero_cost_scores(model(wide), *batch)
    assert wide_scores["zc_params"] > narrow_scores["zc_params"]
    assert wide_scores["zc_synflow"] > narrow_scores["zc_synflow"]


def test_naswot_sees_identical_images_as_a_singular_kernel(batch):
    x, y = batch
    same = x[:1].repeat(len(x), 1, 1, 1)
    assert SCORES["naswot"].fn(model(), same, y) == float("-inf")
    assert zero_cost_scores(model(), same, y)["zc_naswot"] is None  # not a number: recorded empty


def test_the_score_batch_follows_the_calibration_rule():
    data = load_dataset("digits", split_seed=0)
    x, y = image_batch(data, 64, seed=3)
    assert x.shape == (64, 1, 8, 8) and y.shape == (64,) and y.dtype == torch.long
    small, _ = image_batch(data, 8, seed=3)
    assert torch.equal(small, x[:8])  # a smaller batch is the start of a larger one
    assert (calibration_batch(data, 8, seed=3) == small.numpy()).all()
    assert not torch.equal(image_batch(data, 8, seed=4)[0], small)


@pytest.mark.parametrize("text, words", [
    ("naswot", ["expected SCORE:F", "naswot, "]), ("foo:0.5", ["unknown score 'foo'", "synflow"]),
    ("naswot:1", ["(0, 1)"]), ("naswot:0", ["(0, 1)"]), ("naswot:half", ["(0, 1)"]), (":0.5", ["SCORE:F"])])
def test_bad_prefilters_are_one_line(text, words):
    with pytest.raises(CspnasError) as e:
        parse_prefilter(text)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    assert parse_prefilter("grad_norm:0.25") == ("grad_norm", 0.25)
