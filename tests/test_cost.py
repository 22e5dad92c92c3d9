"""Tests for cspnas.cost: exact MAC counts, cross-checks, silence, latency and memory sanity."""

from __future__ import annotations

import json
import logging
import time
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cspnas.cost import (
    CostReport,
    LatencySettings,
    count_macs,
    count_params,
    measure_cost,
    measure_latency,
    measure_peak_memory,
)
from cspnas.errors import CspnasError

FAST = dict(min_run_time_s=0.05, warmup=1)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def conv_net(width: int = 16, depth: int = 10, in_chs: int = 3) -> nn.Sequential:
    """A CIFAR-size plain conv net: conv-BN-ReLU blocks, two stride-2, then a classifier."""
    layers: list[nn.Module] = []
    chs = in_chs
    for i in range(depth):
        stride = 2 if i in (depth // 3, 2 * depth // 3) else 1
        layers += [nn.Conv2d(chs, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        chs = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chs, 10)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- params


def test_count_params_counts_frozen_and_tied_once_and_skips_buffers():
    conv = nn.Conv2d(3, 8, 3, bias=False)  # 216
    bn = nn.BatchNorm2d(8)  # 16 params, 3 buffers not counted
    head = nn.Linear(8, 8)  # 72
    tied = nn.Linear(8, 8)
    tied.weight = head.weight  # shared weight counted once; its own bias (8) counts
    bn.weight.requires_grad_(False)
    model = nn.Sequential(conv, bn, head, tied)
    assert count_params(model) == 216 + 16 + 72 + 8


# ---------------------------------------------------------------- MACs: exact values


def test_single_conv_macs_exact():
    r = count_macs(nn.Conv2d(3, 8, 3, padding=1, bias=False), in_chs=3, input_size=16)
    assert r.total == 3 * 8 * 9 * 16 * 16
    assert r.by_operator == {"conv": 3 * 8 * 9 * 16 * 16}
    assert r.input_shape == (1, 3, 16, 16)
    assert "1 multiply-add = 1 flop" in r.convention


def test_conv_bias_not_counted_and_rectangular_input():
    r = count_macs(nn.Conv2d(3, 4, 3, stride=2, padding=1), in_chs=3, input_size=(16, 8))
    assert r.total == 3 * 4 * 9 * 8 * 4  # output 8 x 4
    assert r.input_shape == (1, 3, 16, 8)


def test_linear_macs_exact_bias_not_counted():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    r = count_macs(model, in_chs=3, input_size=4)
    assert r.total == 48 * 7
    assert r.by_module["1"] == 48 * 7


def test_batchnorm_counted_two_per_element_in_eval_one_without_affine():
    affine = count_macs(nn.BatchNorm2d(8), in_chs=8, input_size=16)
    plain = count_macs(nn.BatchNorm2d(8, affine=False), in_chs=8, input_size=16)
    assert affine.total == affine.by_operator["batch_norm"] == 2 * 8 * 16 * 16
    assert plain.total == 8 * 16 * 16


def test_counts_in_eval_mode_and_restores_each_modules_flag():
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.BatchNorm2d(8))
    model.train()
    model[2].eval()  # a deliberately frozen BN must stay in eval mode
    before = model[1].running_mean.clone()
    r = count_macs(model, in_chs=3, input_size=4)
    assert r.by_operator["batch_norm"] == 2 * (2 * 8 * 16)  # eval-mode BN count, not train's 5/elem
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert torch.equal(model[1].running_mean, before)  # eval forward did not update stats


def test_small_net_total_equals_hand_computed_sum():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),  # -> 16 x 16 x 16
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),  # depthwise
        nn.Conv2d(16, 32, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.SiLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=4, bias=False),  # -> 32 x 8 x 8
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    convs = 3 * 16 * 9 * 16 * 16 + 1 * 16 * 9 * 16 * 16 + 16 * 32 * 16 * 16 + 8 * 32 * 9 * 8 * 8
    bns = 2 * 16 * 16 * 16 + 2 * 32 * 16 * 16
    pool = 32 * 8 * 8  # fvcore: 1 per input element
    linear = 32 * 10
    r = count_macs(model, in_chs=3, input_size=32)
    assert r.by_operator == {"conv": convs, "batch_norm": bns, "adaptive_avg_pool2d": pool, "linear": linear}
    assert r.total == convs + bns + pool + linear
    assert r.by_module[""] == r.total
    assert r.by_module["4"] == 16 * 32 * 16 * 16


def test_by_module_keeps_nested_names():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU()), nn.Conv2d(4, 4, 1, bias=False))
    r = count_macs(model, in_chs=3, input_size=2)
    assert r.by_module["0"] == r.by_module["0.0"] == 3 * 4 * 4
    assert r.by_module["0.1"] == 0
    assert r.by_module["1"] == 4 * 4 * 4


# ---------------------------------------------------------------- MACs: cross-check with torch


class Residual(nn.Module):
    def __init__(self, chs: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(chs, chs, 3, padding=2, dilation=2, groups=2, bias=False)
        self.b = nn.Conv2d(chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


CROSS_CHECK_NETS = {
    "plain": lambda: conv_net(width=8, depth=4),
    "strided-grouped": lambda: nn.Sequential(
        nn.Conv2d(3, 12, 5, stride=2, padding=2),
        nn.Conv2d(12, 24, 3, stride=2, padding=1, groups=3),
        nn.Conv2d(24, 24, 3, padding=1, groups=24),
        nn.Conv2d(24, 10, (1, 3), stride=(1, 2)),
    ),
    "residual-dilated-linear": lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), Residual(8), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)
    ),
}


@pytest.mark.parametrize("name", sorted(CROSS_CHECK_NETS))
def test_matches_torch_flop_counter_on_conv_and_matmul(name):
    torch.manual_seed(0)
    model = CROSS_CHECK_NETS[name]().eval()
    r = count_macs(model, in_chs=3, input_size=24)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 24, 24))
    matrix_ops = {"conv", "linear", "addmm", "matmul", "mm", "bmm"}
    fvcore_matrix = sum(v for k, v in r.by_operator.items() if k in matrix_ops)
    assert fvcore_matrix > 0
    assert 2 * fvcore_matrix == counter.get_total_flops()


# ---------------------------------------------------------------- MACs: silence and errors


class Chatty(nn.Module):
    """SiLU twice, a residual add, and a data-dependent branch (which makes the tracer warn)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        if y.sum() > -1e9:
            y = self.act(y)
        return y + x


def test_unsupported_ops_captured_and_nothing_printed(capfd, caplog):
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("fvcore")
    handlers_before, propagate_before = list(logger.handlers), logger.propagate
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        r = count_macs(Chatty(), in_chs=3, input_size=8)
    assert r.unsupported_ops["aten::silu"] == 2
    assert r.unsupported_ops["aten::add"] == 1
    assert r.total == 3 * 3 * 64
    assert any("TracerWarning" in w for w in r.trace_warnings)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert caplog.records == []
    assert leaked == []
    assert logger.handlers == handlers_before and logger.propagate == propagate_before


def test_count_macs_rejects_bad_input_description():
    model = nn.Conv2d(3, 4, 1)
    with pytest.raises(CspnasError, match="in_chs"):
        count_macs(model, in_chs=0, input_size=8)
    with pytest.raises(CspnasError, match="input_size"):
        count_macs(model, in_chs=3, input_size=(8,))
    with pytest.raises(CspnasError, match=r"shape \(1, 5, 8, 8\)"):
        count_macs(model, in_chs=5, input_size=8)  # model wants 3 channels
    assert model.training  # restored even when the trace failed


# ---------------------------------------------------------------- latency


def test_latency_sane_with_settings_attached_and_caller_state_untouched():
    model = conv_net(width=8, depth=3).train()
    threads_before = torch.get_num_threads()
    settings = LatencySettings(threads=1, **FAST)
    lat = measure_latency(model, settings)
    assert lat.ms > 0 and lat.iqr_ms >= 0 and lat.runs >= 1
    assert isinstance(lat.noisy, bool)
    assert lat.settings == settings
    row = lat.to_dict()
    assert json.loads(json.dumps(row)) == row
    assert row["threads"] == 1 and row["device"] == "cpu" and row["ms"] == lat.ms
    assert torch.get_num_threads() == threads_before
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_bigger_model_measures_slower():
    tiny = nn.Conv2d(3, 8, 3, padding=1)  # ~0.2 MMACs
    big = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), *[nn.Conv2d(32, 32, 3, padding=1) for _ in range(10)])
    settings = LatencySettings(input_size=32, **FAST)  # big: ~95 MMACs, ~400x tiny
    assert measure_latency(big, settings).ms > 5 * measure_latency(tiny, settings).ms


def test_threads_setting_used_during_timing_and_restored():
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x * 2

    torch.set_num_threads(2)
    try:
        measure_latency(Probe(), LatencySettings(threads=1, **FAST))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)
    assert seen and set(seen) == {1}


def test_slow_call_still_gets_several_timed_blocks():
    class Slow(nn.Module):  # one call (20 ms) is longer than the whole budget (10 ms)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return x

    lat = measure_latency(Slow(), LatencySettings(min_run_time_s=0.01, warmup=0))
    assert lat.runs >= 4
    assert 19 < lat.ms < 200


def test_bfloat16_and_channels_last_run_on_a_copy():
    model = conv_net(width=8, depth=3)
    lat = measure_latency(model, LatencySettings(dtype="bfloat16", channels_last=True, batch_size=2, **FAST))
    assert lat.ms > 0 and lat.settings.dtype == "bfloat16"
    assert next(model.parameters()).dtype == torch.float32
    assert next(model.parameters()).is_contiguous()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": "gpu"}, "unknown device"),
        ({"device": "cpu:0"}, "unknown device"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"input_size": -1}, "input_size"),
        ({"dtype": "float64"}, "unknown dtype"),
        ({"dtype": "float16"}, "only supported on cuda"),
        ({"min_run_time_s": 0}, "min_run_time_s"),
        ({"warmup": -1}, "warmup"),
    ],
)
def test_invalid_latency_settings_raise(kwargs, match):
    with pytest.raises(CspnasError, match=match):
        LatencySettings(**kwargs)


def test_settings_round_trip_and_unknown_keys():
    s = LatencySettings(batch_size=4, dtype="bfloat16")
    assert LatencySettings.from_dict(s.to_dict()) == s
    with pytest.raises(CspnasError, match="unknown latency setting"):
        LatencySettings.from_dict({"batch": 4})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(CspnasError, match="no GPU is visible; use --device cpu"):
        measure_latency(nn.Conv2d(3, 4, 1), LatencySettings(device="cuda", **FAST))


def test_model_failing_on_input_is_a_clear_error():
    with pytest.raises(CspnasError, match="check in_chs"):
        measure_latency(nn.Conv2d(3, 4, 1), LatencySettings(in_chs=5, **FAST))


# ---------------------------------------------------------------- peak memory


def test_cpu_peak_memory_matches_live_tensor_accounting():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(inplace=True),  # in place: no new tensor
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),  # input (32ch) and output (32ch) alive together: the peak
        nn.Conv2d(32, 8, 3, padding=1),
    )
    hw, f32 = 16 * 16, 4
    weights = count_params(model) * f32
    for batch in (1, 2):
        peak = measure_peak_memory(model, LatencySettings(input_size=16, batch_size=batch))
        assert peak.method.startswith("cpu-estimate")
        assert peak.bytes == weights + batch * (3 * hw + 2 * 32 * hw) * f32


class CrossStage(nn.Module):
    """CSP-style: the first conv's output waits for the branch, then both are concatenated."""

    def __init__(self, free_early: bool) -> None:
        super().__init__()
        self.free_early = free_early
        self.c1, self.c2, self.c3 = (nn.Conv2d(8, 8, 1, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        a = self.c2(y)
        b = self.c3(a)
        if self.free_early:
            del a
        return torch.cat([y, b], 1)


@pytest.mark.parametrize("free_early, live_chs", [(False, 8 + 8 + 8 + 16), (True, 8 + 8 + 16)])
def test_cpu_peak_memory_follows_tensor_lifetimes(free_early, live_chs):
    hw, f32 = 4 * 4, 4
    peak = measure_peak_memory(CrossStage(free_early), LatencySettings(in_chs=8, input_size=4))
    # weights (3 x 64) + input (8 ch) + at the final cat: y, [a,] b and the 16-ch output.
    assert peak.bytes == 3 * 64 * f32 + 8 * hw * f32 + live_chs * hw * f32


# ---------------------------------------------------------------- measure_cost


def test_measure_cost_report_is_flat_json_and_consistent():
    model = conv_net(width=8, depth=4)
    report = measure_cost(
        model, in_chs=3, input_size=16, latency=LatencySettings(input_size=64, **FAST), memory=True
    )
    assert isinstance(report, CostReport)
    assert report.params == count_params(model)
    assert report.macs == count_macs(model, in_chs=3, input_size=16).total
    assert report.latency is not None and report.latency.settings.input_size == 16
    assert report.peak_memory_bytes and report.peak_memory_bytes > report.params * 4
    assert report.measure_seconds > 0
    row = report.to_dict()
    assert json.loads(json.dumps(row)) == row
    assert all(not isinstance(v, dict) for v in row.values())
    assert row["latency_ms"] == report.latency.ms and row["latency_input_size"] == 16


def test_measure_cost_without_latency_keeps_the_same_columns():
    model = conv_net(width=8, depth=2)
    bare = measure_cost(model, in_chs=3, input_size=8).to_dict()
    full = measure_cost(model, in_chs=3, input_size=8, latency=LatencySettings(**FAST)).to_dict()
    assert bare.keys() == full.keys()
    assert bare["latency_ms"] is None and bare["peak_memory_bytes"] is None


# ---------------------------------------------------------------- CUDA


@needs_cuda
def test_cuda_latency_and_peak_memory():
    model = conv_net(width=32, depth=6)
    settings = LatencySettings(device="cuda", batch_size=8, **FAST)
    lat = measure_latency(model, settings)
    assert lat.ms > 0 and lat.settings.device == "cuda"
    assert next(model.parameters()).device.type == "cpu"
    peak = measure_peak_memory(model, settings)
    assert peak.method.startswith("cuda-allocator")
    assert peak.bytes > count_params(model) * 4 + 8 * 3 * 32 * 32 * 4


@needs_cuda
def test_cuda_float16_runs():
    lat = measure_latency(conv_net(width=16, depth=3), LatencySettings(device="cuda", dtype="float16", **FAST))
    assert lat.ms > 0
