"""The deploy runtime: ONNX export, ONNX Runtime sessions and int8 (QDQ) quantization, in one place.

`cspnas export` writes and checks its ONNX files with these functions and the "onnxruntime" latency
backend times the very same bytes under the very same session options, so the latency a search
records is the latency of the file it exports (same opset, graph, quantization, threads).
"""
from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cspnas.cost._runtime import first_line
from cspnas.cost.backends import LatencyBackend, Timing, register_latency_backend
from cspnas.cost.settings import LatencySettings
from cspnas.cost.timing import summarize, time_calls
from cspnas.errors import CspnasError

if TYPE_CHECKING:
    import onnxruntime as ort

ONNX_OPSET = 17
PROVIDERS = ("CPUExecutionProvider",)
# int8: ONNX Runtime static quantization in QDQ format, signed 8-bit activations and weights (ORT's
# recommended S8S8 for x86 CPUs), per-channel weight scales, MinMax calibration. Recorded as data.
QUANTIZATION = {"pre_process": "quant_pre_process", "format": "QDQ", "activations": "QInt8", "weights": "QInt8", "per_channel": True,
                "calibration": "MinMax"}


class QuantizationError(CspnasError):
    """ONNX Runtime could not quantize a model (a search records the candidate as failed)."""


def session_options(threads: int) -> dict[str, Any]:
    """The session options every cspnas ONNX Runtime session uses (recorded with each latency)."""
    return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
            "graph_optimization_level": "all", "providers": list(PROVIDERS)}


def session(model: bytes | str | Path, threads: int = 1) -> ort.InferenceSession:
    """An InferenceSession over ONNX bytes or a file, with `session_options(threads)`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    source = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(source, sess_options=opts, providers=list(PROVIDERS))


def onnx_bytes(model: nn.Module, example: torch.Tensor, outputs: list[str] | None = None) -> bytes:
    """`model` (eval mode, float32, CPU) as a checked ONNX file with input "input" and a dynamic batch axis."""
    outputs = outputs or ["logits"]
    buffer = io.BytesIO()
    # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles these convnets fully
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, opset_version=ONNX_OPSET, dynamo=False,
                          input_names=["input"], output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in ["input", *outputs]})
    import onnx

    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def quantize_int8(fp32: bytes, calibration: np.ndarray) -> bytes:
    """The int8 QDQ model of ONNX bytes `fp32`, calibrated on `calibration` (N x C x H x W float32,
    normalised as the model's input). Deterministic: same bytes + same images -> same model."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    if len(calibration) == 0:
        raise QuantizationError("int8 quantization needs at least one calibration image")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="cspnas-int8-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)  # the quantizer logs advice on the root logger for every model
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # ORT's recommended pre-pass: folds constants (conv biases become initializers, so
                # they are quantized too) and infers shapes
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                per_channel=QUANTIZATION["per_channel"], calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:  # noqa: BLE001 - the quantizer raises many types; the reason is what matters
            raise QuantizationError(f"ONNX Runtime could not quantize the model to int8: {first_line(e)}") from e
        finally:
            logging.disable(muted)
        return dst.read_bytes()


def random_calibration(settings: LatencySettings) -> np.ndarray:
    """Seeded standard-normal images: the calibration set when no training images are at hand."""
    rng = np.random.default_rng(settings.calibration_seed)
    shape = (settings.calibration_images, settings.in_chs, settings.input_size, settings.input_size)
    return rng.standard_normal(shape, dtype=np.float32)


def deploy_bytes(model: nn.Module, settings: LatencySettings, calibration: np.ndarray | None = None) -> bytes:
    """The ONNX file `cspnas export` writes for `model` at `settings.precision` (int8: calibrated on
    `calibration`, else on `random_calibration`)."""
    import copy

    clone = copy.deepcopy(model).float().eval().cpu()
    fp32 = onnx_bytes(clone, torch.zeros((1, settings.in_chs, settings.input_size, settings.input_size)))
    if settings.precision == "fp32":
        return fp32
    return quantize_int8(fp32, random_calibration(settings) if calibration is None else calibration)


def time_session(sess: ort.InferenceSession, x: np.ndarray, settings: LatencySettings) -> Timing:
    """`sess.run` on `x` timed call by call (cspnas.cost.timing), summarized by `settings.statistic`."""
    feed = {sess.get_inputs()[0].name: x}
    times = time_calls(lambda: sess.run(None, feed), settings.warmup, settings.min_run_time_s)
    return summarize(times, settings.statistic)


@register_latency_backend
class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime (CPU) on the model as `cspnas export` writes it: fp32, or int8 QDQ."""

    name = "onnxruntime"

    def describe(self, settings: LatencySettings) -> dict:
        import onnxruntime as ort

        info = {"name": self.name, "onnxruntime": ort.__version__, "torch": torch.__version__,
                "opset": ONNX_OPSET, "precision": settings.precision, "timer": "perf_counter per call",
                "statistic": settings.statistic,
                "session": session_options(settings.threads),
                "options": {"warmup": settings.warmup, "min_run_time_s": settings.min_run_time_s}}
        if settings.precision == "int8":
            info["quantization"] = {**QUANTIZATION, "calibration_images": settings.calibration_images,
                                    "calibration_seed": settings.calibration_seed}
        return info

    def measure(self, model: nn.Module, settings: LatencySettings, calibration: np.ndarray | None = None) -> Timing:
        try:
            data = deploy_bytes(model, settings, calibration)
        except CspnasError:
            raise
        except Exception as e:  # noqa: BLE001 - the exporter raises many types for a model it cannot trace
            raise CspnasError(f"the model could not be exported to ONNX for timing: {first_line(e)}") from e
        # same input as the torch backend: fixed seed, values do not change the timing
        x = torch.randn(settings.input_shape, generator=torch.Generator().manual_seed(0)).numpy()
        return time_session(session(data, settings.threads), x, settings)
