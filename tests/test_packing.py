"""Packing trials onto one device: the memory ledger's admission (real files, real processes) and
the default number of trials per GPU. The out-of-memory retry alone runs in a real search in
tests/test_fault_isolation.py."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cspnas.search.packing import (MAX_TRIALS_PER_GPU, PROCESS_OVERHEAD_BYTES, Device, Ledger,
                                   default_trials_per_gpu, trial_bytes)
from cspnas.search.runner import default_gpus_per_trial
from cspnas.space.footprint import footprint
from cspnas.space.searchspace import load_space

REPO = Path(__file__).resolve().parents[1]
GPU = Device("gpu-test", capacity=100)


def _hold(lock_dir: Path, name: str, need: int, seconds: float, alone: bool = False) -> subprocess.Popen:
    """Another process that is admitted, prints 'in', trains for `seconds` and leaves (or dies: seconds < 0)."""
    code = (f"import os, sys, time; from cspnas.search.packing import Device, Ledger\n"
            f"l = Ledger({str(lock_dir)!r}, Device('gpu-test', 100))\n"
            f"assert l.try_admit({name!r}, {need}, alone={alone}); print('in', flush=True)\n"
            f"time.sleep({abs(seconds)}); os._exit(0) if {seconds} < 0 else l.release({name!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in"
    return proc


def test_admission_fits_trials_into_the_capacity(tmp_path):
    ledger = Ledger(tmp_path, GPU)
    assert ledger.try_admit("a", 60)
    assert not ledger.try_admit("b", 60)  # 120 > 100: waits
    assert ledger.try_admit("c", 40)
    ledger.release("a")
    assert ledger.try_admit("b", 60)
    assert set(ledger.entries()) == {"b", "c"}


def test_a_trial_larger_than_the_device_gets_it_when_empty(tmp_path):
    ledger = Ledger(tmp_path, GPU)
    assert ledger.try_admit("huge", 500)
    assert not ledger.try_admit("small", 1)
    ledger.release("huge")
    assert ledger.try_admit("small", 1)


def test_a_retry_alone_waits_for_an_empty_device_and_keeps_others_out(tmp_path):
    ledger = Ledger(tmp_path, GPU)
    assert ledger.try_admit("a", 10)
    assert not ledger.try_admit("retry", 10, alone=True)
    ledger.release("a")
    assert ledger.try_admit("retry", 10, alone=True)
    assert not ledger.try_admit("b", 1)
    ledger.release("retry")
    assert ledger.try_admit("b", 1)


def test_waiting_ends_when_another_process_releases(tmp_path):
    other = _hold(tmp_path, "other", 80, 1.0)
    t0 = time.monotonic()
    with Ledger(tmp_path, GPU).admitted("me", 50) as waited:
        assert time.monotonic() - t0 >= 0.5 and waited >= 0.5
        assert set(Ledger(tmp_path, GPU).entries()) == {"me"}
    assert other.wait(timeout=10) == 0
    assert Ledger(tmp_path, GPU).entries() == {}


def test_a_dead_trainer_never_blocks_the_device(tmp_path):
    dead = _hold(tmp_path, "killed", 100, -0.01, alone=True)  # exits without releasing
    dead.wait(timeout=10)
    assert Ledger(tmp_path, GPU).try_admit("next", 100)


def test_waiting_notices_a_stopping_search(tmp_path):
    ledger = Ledger(tmp_path, GPU)
    assert ledger.try_admit("big", 100)

    def stopping():
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        with Ledger(tmp_path, GPU).admitted("me", 1, checkpoint=stopping):
            pass
    assert set(ledger.entries()) == {"big"}


def test_default_trials_per_gpu_from_memory_and_the_largest_candidate():
    gib = 2**30
    assert default_trials_per_gpu(80 * gib, 4 * gib) == 16  # 68 GiB usable / 4 GiB = 17, capped at 16
    assert default_trials_per_gpu(16 * gib, 4 * gib) == 3
    assert default_trials_per_gpu(8 * gib, 20 * gib) == 1  # too big for one: still trained, alone
    assert default_trials_per_gpu(10**15, 1) == MAX_TRIALS_PER_GPU
    # Ray's GPU share: spread first, then at most trials_per_gpu on one GPU
    assert default_gpus_per_trial(1, 16, 4) == 0.25
    assert default_gpus_per_trial(1, 16, 16) == 1 / 16
    assert default_gpus_per_trial(4, 4, 8) == 1.0
    assert default_gpus_per_trial(1, 2, None) == 0.5


def test_trial_estimate_covers_training_eval_data_and_the_process():
    space = load_space("default")
    arch = space.largest(3, 10)
    f = footprint(arch, 32)
    need = trial_bytes(arch, 32, 128, 2048, data_bytes=1000, device_type="cuda")
    assert need == max(f.training_bytes(128), f.inference_bytes(2048)) + 1000 + PROCESS_OVERHEAD_BYTES["cuda"]
    assert trial_bytes(arch, 32, 128, 512, 0, "cpu") < need
