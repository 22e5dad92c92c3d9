"""What a latency model sees of an architecture: per-op counts and sizes, from the config alone.

Latency on one device is close to a sum of per-op costs (nn-Meter's observation): a fixed cost per
layer call, and costs that grow with multiply-adds and with the values an op reads and writes. So the
features are additive totals over the ops `cspnas.space.footprint.layer_plan` walks (nothing is
built): call counts, MACs by kind of convolution (1x1, kxk, grouped; their arithmetic intensity
differs) and by output-channel band (a convolution is a matrix product with `cout` rows, and narrow
ones run well below the machine's peak), output values by activation (norm + activation are memory-bound element-wise passes),
joins (sums and concatenations) and squeeze-excite. A model's coefficients are per-feature costs.
"""
from __future__ import annotations

from cspnas.space.arch import ACTIVATIONS, ArchConfig
from cspnas.space.footprint import layer_plan

# output-channel bands of a convolution's MACs: cout <= 32, <= 64, <= 128, more
COUT_BANDS = (32, 64, 128)
CONV_KINDS = ("1x1", "kxk", "grouped")  # dense 1x1, dense kxk and grouped convolutions


def _band(cout: int) -> int:
    return sum(cout > edge for edge in COUT_BANDS)


# Fixed order: a model file stores one coefficient per name, in this order.
FEATURES = (
    "calls",  # ConvNormAct modules: the fixed per-call cost of conv + norm + activation
    # multiply-adds by kind of convolution and output-channel band
    *(f"macs_{kind}_c{band}" for kind in CONV_KINDS for band in range(len(COUT_BANDS) + 1)),
    "im2col",  # values a kxk convolution gathers (cin/groups * k^2 * output positions): its unfold traffic
    "conv_in",  # values every convolution reads
    "conv_out",  # values every convolution writes (batch norm reads and writes them again)
    *(f"act_{a}" for a in ACTIVATIONS),  # values each activation function passes over
    "joins", "join_values",  # sums and concatenations: calls and values
    "se", "se_values",  # squeeze-excite: calls and the values it scales
    "head",  # pool + linear: calls (one) plus the pooled values
)
SCALE = 1e-6  # features are stored in millions, so coefficients are ms per million (readable, well conditioned)


def arch_features(arch: ArchConfig, input_size: int) -> list[float]:
    """The FEATURES of `arch` on a batch of one `input_size` x `input_size` image, in millions."""
    plan = layer_plan(arch, input_size)
    acts = [arch.stem.act] + [s.act for s in arch.stages]  # by stage index + 1 (the stem is -1)
    f = dict.fromkeys(FEATURES, 0.0)
    for c in plan.convs:
        area = c.out_size * c.out_size
        macs = c.cin // c.groups * c.cout * c.kernel * c.kernel * area
        f["calls"] += 1
        kind = "grouped" if c.groups > 1 else "1x1" if c.kernel == 1 else "kxk"
        f[f"macs_{kind}_c{_band(c.cout)}"] += macs
        if c.kernel > 1:
            f["im2col"] += c.cin // c.groups * c.kernel * c.kernel * area
        f["conv_in"] += c.cin * area
        f["conv_out"] += c.cout * area
        f[f"act_{acts[c.stage + 1]}"] += c.cout * area
    for _stage, values in plan.joins:
        f["joins"] += 1
        f["join_values"] += values
    for _stage, values in plan.se:
        f["se"] += 1
        f["se_values"] += values
    last = arch.stages[-1].out_chs if arch.stages else arch.stem.out_chs[-1]
    f["head"] = 1 + last * arch.num_classes * SCALE  # one call; the linear layer's MACs
    return [f[name] * (SCALE if name not in ("calls", "joins", "se", "head") else 1.0) for name in FEATURES]
