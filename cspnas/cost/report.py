"""One call that gathers every cost of a model, each with the settings it was measured under."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from torch import nn

from cspnas.cost.counting import MACS_CONVENTION, count_macs, count_params
from cspnas.cost.latency import Latency, measure_latency
from cspnas.cost.memory import measure_peak_memory
from cspnas.cost.settings import LatencySettings


@dataclass(frozen=True)
class CostReport:
    params: int
    macs: int
    latency: Latency | None
    peak_memory_bytes: int | None
    peak_memory_method: str | None
    input_shape: tuple[int, ...]  # shape the MACs were counted at (batch 1)
    measure_seconds: float  # wall time spent measuring, all parts together
    macs_convention: str = MACS_CONVENTION

    def to_dict(self) -> dict:
        """Flat and JSON-able, so it drops straight into a results table row.

        Latency fields (median/iqr/runs/noisy and every setting) are prefixed ``latency_``;
        they are None when latency was not measured.
        """
        latency = self.latency.to_dict() if self.latency is not None else _empty_latency_dict()
        return {
            "params": self.params,
            "macs": self.macs,
            "macs_convention": self.macs_convention,
            "input_shape": list(self.input_shape),
            **{f"latency_{k}": v for k, v in latency.items()},
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_method": self.peak_memory_method,
            "measure_seconds": self.measure_seconds,
        }


def _empty_latency_dict() -> dict:
    # Same keys whether or not latency was measured, so table columns line up.
    keys = ["ms", "iqr_ms", "runs", "noisy", *LatencySettings().to_dict(), "backend_info"]
    return dict.fromkeys(keys)


def measure_cost(
    model: nn.Module,
    *,
    in_chs: int,
    input_size: int,
    latency: LatencySettings | None = None,
    memory: bool = False,
) -> CostReport:
    """Params and MACs always; latency if ``latency`` settings are given; peak memory if ``memory``.

    Everything is measured at one input shape: the latency settings' in_chs/input_size are
    replaced by the arguments here (the returned ``Latency.settings`` shows what was used).
    Peak memory uses the latency settings (device, dtype, batch) or CPU float32 defaults.
    """
    start = time.perf_counter()
    macs = count_macs(model, in_chs=in_chs, input_size=input_size)
    run_settings = replace(latency or LatencySettings(), in_chs=in_chs, input_size=input_size)
    timed = measure_latency(model, run_settings) if latency is not None else None
    peak = measure_peak_memory(model, run_settings) if memory else None
    return CostReport(
        params=count_params(model),
        macs=macs.total,
        latency=timed,
        peak_memory_bytes=peak.bytes if peak else None,
        peak_memory_method=peak.method if peak else None,
        input_shape=macs.input_shape,
        measure_seconds=time.perf_counter() - start,
    )
