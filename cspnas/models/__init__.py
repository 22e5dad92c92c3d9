"""Networks from architecture configs: blocks, CSP stages, the builder, published presets."""
from cspnas.models.net import CspNet, build_model, load_arch
from cspnas.models.presets import PRESETS

__all__ = ["CspNet", "PRESETS", "build_model", "load_arch"]
