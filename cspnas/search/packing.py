"""Packing many trials onto one device: how many fit, and admission so packed trials never run each
other out of memory.

Each device (a GPU by its UUID, or a machine's host memory for CPU training) has a ledger: a small
JSON file under RUN/.locks, guarded by an flock, listing the trials training on it and the bytes
each is expected to need (the config-only estimate of cspnas.space.footprint plus the data it
holds on the device and a per-process overhead). A trial is admitted when its estimate fits in
what is left of the device's capacity, or when the device is empty (a candidate larger than the
whole device must still get its one try); otherwise it waits. A trial retried after running out
of memory is admitted alone: it waits for an empty device and keeps every other trial out until
it ends. Entries of dead processes are dropped, so a killed trainer never blocks the device.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cspnas.space.arch import ArchConfig
from cspnas.space.footprint import footprint

# What one trainer process holds beyond the estimate, by device type: on CUDA the context, cuDNN
# workspaces and the caching allocator's slack (a CUDA context alone is 300-600 MiB); on the CPU the
# interpreter, torch and the allocator's slack.
PROCESS_OVERHEAD_BYTES = {"cuda": 768 * 2**20, "cpu": 256 * 2**20}
# Share of a device's memory the ledger hands out: the rest absorbs estimate error and fragmentation.
CAPACITY_SHARE = 0.85
MAX_TRIALS_PER_GPU = 16  # beyond this, host threads (one per trial) rather than memory are the limit
WAIT_POLL_S = 0.2


# Per-trial facts about the worker that trained it, reported with every result and kept as user attrs.
WORKER_ATTRS = ("worker_pid", "worker_rss_mb", "admission_wait_s", "retried_alone")


def trial_bytes(arch: ArchConfig, input_size: int, batch_size: int, eval_batch_size: int, data_bytes: int,
                device_type: str = "cuda") -> int:
    """Memory one trial of `arch` is expected to need at its peak on a device of `device_type`."""
    f = footprint(arch, input_size)
    return (max(f.training_bytes(batch_size), f.inference_bytes(eval_batch_size)) + data_bytes
            + PROCESS_OVERHEAD_BYTES[device_type])


def default_trials_per_gpu(gpu_bytes: int, largest_trial_bytes: int) -> int:
    """Trials per GPU when --trials-per-gpu is not given: as many of the largest candidate as fit in
    CAPACITY_SHARE of the GPU's memory, at least 1 and at most MAX_TRIALS_PER_GPU."""
    fit = int(gpu_bytes * CAPACITY_SHARE) // max(1, largest_trial_bytes)
    return max(1, min(MAX_TRIALS_PER_GPU, fit))


@dataclass(frozen=True)
class Device:
    """What a ledger is kept for: its key (file name) and capacity in bytes."""

    key: str
    capacity: int


def this_device(torch_device) -> Device:
    """The device a trainer in this process trains on (torch.device), as the ledger knows it."""
    if torch_device.type == "cuda":
        import torch

        index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        uuid = str(getattr(props, "uuid", "")) or f"{socket.gethostname()}-{index}"
        return Device(f"gpu-{uuid}", int(props.total_memory * CAPACITY_SHARE))
    return Device(f"host-{socket.gethostname()}", int(_host_bytes() * CAPACITY_SHARE))


def _host_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Ledger:
    """The admission ledger of one device, shared by every trainer of the run on this machine."""

    def __init__(self, lock_dir: str | Path, device: Device, owner: str | None = None):
        self.dir = Path(lock_dir)
        self.device = device
        self.owner = owner or str(os.getpid())  # the process whose death frees its entry
        self._file = self.dir / f"ledger-{device.key}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f"ledger-{self.device.key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                state = json.loads(self._file.read_text())
            except (FileNotFoundError, ValueError):
                state = {}
            entries = {k: v for k, v in state.get("entries", {}).items() if _alive(int(v["pid"]))}
            state = {"capacity": self.device.capacity, "entries": entries}
            yield state
            tmp = self._file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self._file)
        finally:
            os.close(fd)

    def try_admit(self, name: str, need: int, alone: bool = False) -> bool:
        """Record `name` as training with `need` bytes if it fits now; False if it must wait."""
        with self._locked() as state:
            entries = state["entries"]
            used = sum(e["bytes"] for e in entries.values())
            blocked = any(e["alone"] for e in entries.values())
            fits = not entries or (not alone and not blocked and used + need <= state["capacity"])
            if fits:
                entries[name] = {"pid": int(self.owner), "bytes": int(need), "alone": bool(alone)}
            return fits

    def release(self, name: str) -> None:
        with self._locked() as state:
            state["entries"].pop(name, None)

    def entries(self) -> dict[str, dict]:
        with self._locked() as state:
            return dict(state["entries"])

    @contextlib.contextmanager
    def admitted(self, name: str, need: int, alone: bool = False,
                 checkpoint=None) -> Iterator[float]:
        """Wait until `name` is admitted (yields the seconds waited), release it on exit.
        `checkpoint` runs while waiting (e.g. to notice that the search is stopping)."""
        t0 = time.monotonic()
        while not self.try_admit(name, need, alone):
            if checkpoint is not None:
                checkpoint()
            time.sleep(WAIT_POLL_S)
        try:
            yield time.monotonic() - t0
        finally:
            self.release(name)
