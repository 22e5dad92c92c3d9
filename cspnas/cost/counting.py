"""Static counts: parameters and multiply-accumulates (fvcore convention)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from cspnas.cost._runtime import eval_mode, first_line
from cspnas.errors import CspnasError

MACS_CONVENTION = "fvcore: 1 multiply-add = 1 flop; batch-norm counted; activations/adds not counted"


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or frozen; buffers (BN running stats) excluded."""
    # Dedupe by identity so tied weights are counted once, as fvcore/timm do.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass(frozen=True)
class MacsCount:
    """fvcore's multiply-accumulate count for one batch-1 forward pass.

    ``total`` is what papers call "FLOPs" in the fvcore/detectron2 sense; Darknet's
    "BFLOPs" are 2 x total / 1e9. ``unsupported_ops`` lists ops fvcore saw but did not
    count (activations, element-wise adds, ...): op name -> number of calls.
    ``trace_warnings`` keeps whatever the jit tracer/fvcore said, instead of printing it.
    """

    total: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    unsupported_ops: dict[str, int]
    input_shape: tuple[int, ...]
    convention: str = MACS_CONVENTION
    trace_warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "macs": self.total,
            "macs_by_operator": dict(self.by_operator),
            "macs_unsupported_ops": dict(self.unsupported_ops),
            "input_shape": list(self.input_shape),
            "macs_convention": self.convention,
        }


def input_shape_for(in_chs: int, input_size: int | tuple[int, int], batch_size: int = 1) -> tuple[int, int, int, int]:
    """Validate and build an NCHW shape; a bare int means a square image."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if isinstance(in_chs, bool) or not isinstance(in_chs, int) or in_chs < 1:
        raise CspnasError(f"in_chs must be a positive integer, got {in_chs!r}; pass e.g. in_chs=3 for RGB")
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise CspnasError(f"input_size must be a positive int or (H, W) pair of ints, got {input_size!r}")
    return (batch_size, in_chs, size[0], size[1])


def count_macs(model: nn.Module, *, in_chs: int, input_size: int | tuple[int, int]) -> MacsCount:
    """Count MACs with fvcore on a batch-1 input, in eval mode, without copying the model.

    The model's train/eval flags are restored afterwards. Nothing is printed: fvcore's
    logger and Python warnings raised while tracing are captured into the result.
    """
    # Imported here: fvcore pulls in iopath/tabulate etc., not needed by latency-only callers.
    from fvcore.nn import FlopCountAnalysis

    shape = input_shape_for(in_chs, input_size)
    # Input follows the model's own device/dtype: counting must not move or cast the model.
    ref = next(iter(model.parameters()), torch.zeros(()))
    x = torch.zeros(shape, device=ref.device, dtype=ref.dtype)
    with eval_mode(model), torch.no_grad(), _captured_diagnostics() as said:
        analysis = FlopCountAnalysis(model, (x,))
        # fvcore would log these; we return unsupported ops instead. Tracer warnings are kept
        # ("all") because they flag data-dependent control flow that can make a count wrong.
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("all")
        try:
            total = analysis.total()  # runs the trace; the getters below reuse it
        except RuntimeError as e:
            raise CspnasError(
                f"model failed on an input of shape {shape} while counting MACs ({first_line(e)}); check in_chs/input_size"
            ) from e
        by_operator = {k: int(v) for k, v in analysis.by_operator().items()}
        by_module = {k: int(v) for k, v in analysis.by_module().items()}
        unsupported = {k: int(v) for k, v in analysis.unsupported_ops().items()}
    # Built after the capture block closes: that is when recorded warnings land in `said`.
    return MacsCount(
        total=int(total),
        by_operator=by_operator,
        by_module=by_module,
        unsupported_ops=unsupported,
        input_shape=shape,
        trace_warnings=tuple(dict.fromkeys(said)),
    )


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextmanager
def _captured_diagnostics() -> Iterator[list[str]]:
    """Collect fvcore log records and Python warnings into a list instead of the console."""
    said: list[str] = []
    logger = logging.getLogger("fvcore")
    handler = _ListHandler(said)
    old_propagate, old_level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False  # the root handler would print them
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield said
        said.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        logger.setLevel(old_level)
