"""Peak memory of one inference forward pass.

CUDA: measured by the caching allocator (``torch.cuda.max_memory_allocated`` after a
reset), so it includes weights, input, activations and kernel workspaces.

CPU: torch keeps no allocator statistics, so this is an op-level *estimate*: weights +
buffers + input bytes, plus the peak total size of tensors created during the forward
that are alive at the same time. Liveness is tracked exactly (a TorchDispatchMode sees
every op's outputs, and a tensor's storage is released when its last view is freed), but
kernel scratch space (oneDNN workspaces, im2col buffers) and allocator overhead are not seen.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cspnas.cost._runtime import deployed_copy, synchronize, torch_threads
from cspnas.cost.latency import run_forward
from cspnas.cost.settings import LatencySettings

CUDA_METHOD = "cuda-allocator: torch.cuda.max_memory_allocated over one forward (weights+input+activations+workspaces)"
CPU_METHOD = "cpu-estimate: weights+buffers+input bytes + peak live bytes of tensors created in the forward (op-level)"


@dataclass(frozen=True)
class PeakMemory:
    bytes: int
    method: str
    settings: LatencySettings
    activation_bytes: int = 0  # the part above weights, buffers and input: what the forward allocates

    def to_dict(self) -> dict:
        return {"peak_memory_bytes": self.bytes, "peak_memory_method": self.method, **self.settings.to_dict()}


def measure_peak_memory(model: nn.Module, settings: LatencySettings = LatencySettings()) -> PeakMemory:
    """Peak bytes of one inference forward of a deployed copy of ``model``; see module docstring."""
    clone, x = deployed_copy(model, settings)
    with torch.inference_mode(), torch_threads(settings.threads):
        static = sum(t.untyped_storage().nbytes() for t in (*clone.parameters(), *clone.buffers(), x))
        if x.device.type == "cuda":
            peak = _cuda_peak(clone, x)
            return PeakMemory(peak, CUDA_METHOD, settings, max(0, peak - static))
        peak = _cpu_peak(clone, x)
        return PeakMemory(peak, CPU_METHOD, settings, peak - static)


def _cuda_peak(model: nn.Module, x: torch.Tensor) -> int:
    run_forward(model, x)  # first call may allocate lazily-initialised state; not steady state
    synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    run_forward(model, x)
    synchronize(x.device)
    return int(torch.cuda.max_memory_allocated(x.device))


def _cpu_peak(model: nn.Module, x: torch.Tensor) -> int:
    static = [*model.parameters(), *model.buffers(), x]
    static_storages = {_storage_key(t): t.untyped_storage().nbytes() for t in static}
    tracker = _LiveTensorBytes(set(static_storages))
    with tracker:
        run_forward(model, x)
    return sum(static_storages.values()) + tracker.peak


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    storage = t.untyped_storage()
    return (str(storage.device), storage.data_ptr())


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created by ops and still referenced by some tensor."""

    def __init__(self, static: set[tuple[str, int]]) -> None:
        super().__init__()
        self.static = static  # weights/input: already counted, and views of them allocate nothing
        self.refs: dict[tuple[str, int], int] = {}  # storage -> live tensors viewing it
        self.tracked: set[int] = set()  # ids of live tensors already counted (in-place ops return them again)
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in self.tracked:
                self._track(t)
        self.peak = max(self.peak, self.live)
        return out

    def _track(self, t: torch.Tensor) -> None:
        key, nbytes = _storage_key(t), t.untyped_storage().nbytes()
        if key in self.static or nbytes == 0:
            return
        if key not in self.refs:
            self.refs[key] = 0
            self.live += nbytes
        self.refs[key] += 1
        self.tracked.add(id(t))
        weakref.finalize(t, self._release, key, nbytes, id(t))

    def _release(self, key: tuple[str, int], nbytes: int, tensor_id: int) -> None:
        self.tracked.discard(tensor_id)
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live -= nbytes
