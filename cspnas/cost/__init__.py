"""Cost model: pure functions of an ``nn.Module`` and its measurement settings.

It knows nothing about architectures or search; every number carries the settings it was
measured under.

Conventions
-----------
* **Params** (:func:`count_params`): every parameter, trainable or frozen, counted once
  even if tied; buffers (BN running stats) are excluded.
* **MACs** (:func:`count_macs`): fvcore's ``FlopCountAnalysis`` on a batch-1 input, model
  in eval mode under ``no_grad``. fvcore counts **1 multiply-add = 1 "flop"**, so its
  "FLOPs" are MACs. What it counts (fvcore 0.1.5):

  - conv: ``N * C_out * H_out * W_out * (C_in / groups) * kH * kW``; bias not counted.
  - linear / addmm / matmul: ``batch * in * out``; bias not counted.
  - batch-norm (eval): **2 per element** with affine weights, 1 without
    (training-mode BN, not used here, would be 5 / 4 per element).
  - adaptive_avg_pool2d: 1 per *input* element; nearest upsample 1 and bilinear 4 per
    output element; group/layer norm 5 per element.
  - not counted: activations (ReLU, SiLU, ...), element-wise add/mul, max-pool, cat.
    Non-free ones show up in ``MacsCount.unsupported_ops`` (op -> number of calls).

  Darknet/YOLO "BFLOPs" are ``2 * MACs / 1e9``; ``torch.utils.flop_counter`` also counts
  2 per multiply-add but only for matmul/conv ops.
* **Latency** (:func:`measure_latency`): a deep copy of the model is cast to
  ``LatencySettings.dtype`` (weights and input; no autocast: this is the deployed setting),
  optionally made channels_last, moved to the device and run in eval + inference mode.
  ``torch.utils.benchmark.Timer`` times it with ``threads`` intra-op threads after explicit
  warm-up, in blocks of calls until ``min_run_time_s`` is spent and at least 4 blocks are
  taken; the median and IQR are over the per-call means of the blocks.
* **Peak memory** (:func:`measure_peak_memory`): measured by the CUDA allocator on GPU;
  an op-level estimate on CPU (see :mod:`cspnas.cost.memory`); the method is reported.
"""

from cspnas.cost.counting import MACS_CONVENTION, MacsCount, count_macs, count_params
from cspnas.cost.latency import Latency, measure_latency
from cspnas.cost.memory import PeakMemory, measure_peak_memory
from cspnas.cost.report import CostReport, measure_cost
from cspnas.cost.settings import LatencySettings

__all__ = [
    "MACS_CONVENTION",
    "CostReport",
    "Latency",
    "LatencySettings",
    "MacsCount",
    "PeakMemory",
    "count_macs",
    "count_params",
    "measure_cost",
    "measure_latency",
    "measure_peak_memory",
]
