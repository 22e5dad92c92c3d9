"""The config-level memory estimate (cspnas.space.footprint) against what the built models really use."""
from __future__ import annotations

import optuna
import pytest
import torch

from cspnas.cost import LatencySettings, count_params, measure_peak_memory
from cspnas.errors import CspnasError
from cspnas.models import PRESETS, build_model
from cspnas.space.footprint import (BYTES_PER_VALUE, TRAIN_ACTIVATION_COPIES, available_bytes, ensure_fits,
                                    footprint)
from cspnas.space.searchspace import load_space


def _sampled(space: str, n: int, seed: int = 0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sp = load_space(space)
    return [sp.sample(study.ask(), in_chs=3, num_classes=10) for _ in range(n)]


def test_parameter_count_is_exact_for_every_preset_and_sampled_arch():
    archs = [make() for make in PRESETS.values()] + _sampled("default", 40) + _sampled("edge", 20)
    archs += load_space("default").corners(3, 10, cheapest=False)
    for arch in archs:
        assert footprint(arch, 32).params == count_params(build_model(arch)), arch.summary()


@pytest.mark.parametrize("size,batch", [(32, 1), (96, 4)])
def test_inference_estimate_is_close_to_the_measured_peak(size, batch):
    """measure_peak_memory tracks every live tensor of a real forward pass (weights + input + activations)."""
    for arch in _sampled("default", 5, seed=1) + [PRESETS["cs3darknet_s"]()]:
        measured = measure_peak_memory(build_model(arch), LatencySettings(input_size=size, batch_size=batch)).bytes
        ratio = footprint(arch, size).inference_bytes(batch) / measured
        assert 0.6 < ratio < 1.6, (arch.summary(), size, batch, ratio)


def test_training_estimate_is_close_to_what_autograd_keeps():
    """The activations part of training_bytes against the bytes autograd really saves for the backward pass."""
    batch, size = 4, 32
    for arch in _sampled("default", 5, seed=2) + [PRESETS["cs3darknet_s"]()]:
        model = build_model(arch).train()
        static = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in static:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(batch, arch.in_chs, size, size)).sum()
        fp = footprint(arch, size)
        estimate = BYTES_PER_VALUE * batch * (fp.input + TRAIN_ACTIVATION_COPIES * fp.activations)
        ratio = estimate / sum(saved.values())
        assert 0.6 < ratio < 1.6, (arch.summary(), ratio)
        assert fp.training_bytes(batch) > fp.inference_bytes(batch)


def test_the_estimate_grows_with_input_batch_and_classes_without_building_anything():
    arch = PRESETS["cspresnet50"]()
    small, big = footprint(arch, 224), footprint(arch, 100_000)  # instant: nothing is allocated
    assert big.largest_map > 10_000 * small.largest_map
    assert big.inference_bytes(1) > 10**12
    assert footprint(arch.with_io(num_classes=10**9), 32).params > 1024 * 10**9  # the head alone


def test_ensure_fits_names_the_estimate_and_the_limit():
    limit, what = available_bytes("cpu")
    assert limit > 0 and "RAM" in what
    ensure_fits(limit // 2, "cpu", "a small job", "do less")  # fits: no error
    with pytest.raises(CspnasError) as info:
        ensure_fits(limit * 4, "cpu", "a big job", "do less")
    message = str(info.value)
    assert message.startswith("a big job needs about ") and "of available RAM; do less" in message
    assert "\n" not in message
