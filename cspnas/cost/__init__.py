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
* **Latency** (:func:`measure_latency`): timed by the backend ``LatencySettings.backend``
  names (:mod:`cspnas.cost.backends`; each latency records its backend's description).
  ``torch``: a deep copy of the model is cast to
  ``LatencySettings.dtype`` (weights and input; no autocast: this is the deployed setting),
  optionally made channels_last, moved to the device and run in eval + inference mode with
  ``threads`` intra-op threads (CUDA: synchronized after each call).
  Every backend times single calls after warm-up until ``min_run_time_s`` is spent (at least
  10 calls) and records ``LatencySettings.statistic`` of them (default the fastest call; see
  :mod:`cspnas.cost.timing` for why) with their IQR. ``onnxruntime``
  (:mod:`cspnas.cost.onnx_runtime`): the model exported exactly as ``cspnas export`` writes it
  (opset 17; ``LatencySettings.precision`` int8: static QDQ quantization calibrated on
  ``calibration_images`` training images) in an ONNX Runtime CPU session with ``threads``
  intra-op threads.
* **Peak memory** (:func:`measure_peak_memory`): measured by the CUDA allocator on GPU;
  an op-level estimate on CPU (see :mod:`cspnas.cost.memory`); the method is reported.
"""

from cspnas.cost.backends import LATENCY_BACKENDS, LatencyBackend, Timing, register_latency_backend
from cspnas.cost.settings import LatencySettings

# Lazy: the measurements need torch and fvcore; the settings (read by every CLI parser) do not.
_LAZY = {"MACS_CONVENTION": "counting", "MacsCount": "counting", "count_macs": "counting",
         "count_params": "counting", "Latency": "latency", "measure_latency": "latency",
         "PeakMemory": "memory", "measure_peak_memory": "memory", "CostReport": "report", "measure_cost": "report"}

__all__ = ["LATENCY_BACKENDS", "LatencyBackend", "LatencySettings", "Timing", "register_latency_backend", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"cspnas.cost.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cspnas.cost' has no attribute {name!r}")
