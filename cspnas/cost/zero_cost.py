"""Zero-cost scores: trainless guesses of how well an untrained network will train, as one table.

A score is a name, a function of (model, images, labels) and a direction; `SCORES` lists them and
everything else (the search's `zc_*` columns in trials.csv, `--prefilter SCORE:F`, the proxy-fidelity
experiment) is derived from it. Adding a score is one `ZeroCostScore` entry.

Every score that changes the model gets its own deep copy (synflow takes absolute values of the
weights, grad_norm back-propagates, NASWOT updates batch-norm statistics), so the caller's model is
never changed. The search scores each candidate as `CostMeter` builds it (`torch.manual_seed(0)`,
cspnas.search.costs) on a fixed batch of `SCORE_IMAGES` training images chosen by the search's
seed (`cspnas.train.quantized.image_batch`, the int8 calibration images' rule), so a score is a
function of the architecture, the data and the seed. torch is imported by the functions, not here:
the settings (every CLI parser) read the names without it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch
    from torch import nn

SCORE_IMAGES = 64  # images in the batch every score sees
PREFIX = "zc_"  # a score's trial attribute and trials.csv column: zc_<name>


@dataclass(frozen=True)
class ZeroCostScore:
    """One trainless score: `fn(model, x, y)` -> float, higher better when `higher_is_better`.
    `changes_model`: fn may change the model (weights, buffers, grads, dtype), so it gets a copy."""

    name: str
    fn: Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], float]
    help: str
    higher_is_better: bool = True
    changes_model: bool = True

    @property
    def column(self) -> str:
        return PREFIX + self.name


def synflow(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """SynFlow (Tanaka et al. 2020; as a NAS proxy Abdelfattah et al. 2021): sum |theta * dR/dtheta| where
    R is the output sum of the network with |weights|, fed an all-ones image, in float64. Batch-norm in
    eval mode (fresh running statistics: an affine identity), as the reference code removes it."""
    import torch

    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    model(torch.ones((1, *x.shape[1:]), dtype=torch.float64)).sum().backward()
    with torch.no_grad():
        return float(sum((p * p.grad).abs().sum() for p in model.parameters() if p.grad is not None))


def naswot(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """NASWOT (Mellor et al. 2021): log |K| of the batch's activation-pattern kernel, K[i, j] = number of
    units (inputs of every activation module) on which images i and j agree (both > 0 or both <= 0)."""
    import torch
    from torch import nn

    from cspnas.models.blocks import activation_types

    kinds = activation_types()
    n = len(x)
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def hook(_module, inputs):
        codes = (inputs[0].detach() > 0).flatten(1).double()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        model.train()  # batch statistics, as in the paper (on this copy only)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else float("-inf")


def grad_norm(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """Gradient norm (Abdelfattah et al. 2021): sum over conv and linear layers of the L2 norm of the
    weight gradient of the cross-entropy loss on the batch (batch-norm on batch statistics)."""
    import torch
    from torch import nn

    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None]
    return float(sum(m.weight.grad.norm() for m in layers)) if layers else 0.0


def params(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """Parameter count: the baseline most zero-cost proxies fail to beat (ZiCo, Li et al. 2023)."""
    from cspnas.cost.counting import count_params

    return float(count_params(model))


SCORES: dict[str, ZeroCostScore] = {s.name: s for s in (
    ZeroCostScore("synflow", synflow, "SynFlow: saliency of the |weights| network on an all-ones image"),
    ZeroCostScore("naswot", naswot, "NASWOT: log-determinant of the activation-pattern kernel of the batch"),
    ZeroCostScore("grad_norm", grad_norm, "summed L2 norms of the conv/linear weight gradients on the batch"),
    ZeroCostScore("params", params, "parameter count (the baseline)", changes_model=False),
)}
COLUMNS = tuple(s.column for s in SCORES.values())


def zero_cost_scores(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor",
                     threads: int = 1) -> dict[str, float | None]:
    """Every score of `model` on the batch (x, y), by column (zc_<name>); each that changes the model on
    its own copy (the caller's is untouched). A score that is not a finite number is None. `threads`:
    torch threads meanwhile (1: the search's driver shares its cores with trainers; on a busy 2-core
    host one thread scored ~10x faster than two)."""
    import torch

    out: dict[str, float | None] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is not consumed
            for s in SCORES.values():
                torch.manual_seed(0)
                value = s.fn(copy.deepcopy(model) if s.changes_model else model, x, y)
                out[s.column] = value if math.isfinite(value) else None
    finally:
        torch.set_num_threads(before)
    return out


def parse_prefilter(text: str) -> tuple[str, float]:
    """`SCORE:F` (e.g. naswot:0.5) -> (score name, fraction in (0, 1)); CspnasError in one line otherwise."""
    from cspnas.errors import CspnasError

    name, sep, fraction = str(text).partition(":")
    names = ", ".join(SCORES)
    if not sep or not name.strip():
        raise CspnasError(f"--prefilter {text!r}: expected SCORE:F, e.g. naswot:0.5 (scores: {names})")
    if name.strip() not in SCORES:
        raise CspnasError(f"--prefilter {text!r}: unknown score {name.strip()!r}; use one of {names}")
    try:
        f = float(fraction)
    except ValueError:
        f = float("nan")
    if not 0 < f < 1:
        raise CspnasError(f"--prefilter {text!r}: F must be a fraction in (0, 1), e.g. {name.strip()}:0.5")
    return name.strip(), f
