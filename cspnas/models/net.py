"""The network builder: ArchConfig -> nn.Module (stem, stages, classifier head)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cspnas.errors import ArchError, CspnasError
from cspnas.models.blocks import ConvNormAct
from cspnas.models.presets import PRESETS
from cspnas.models.stages import build_stage
from cspnas.space.arch import ArchConfig, StemConfig, parse_json, validate


def build_stem(cfg: StemConfig, in_chs: int) -> nn.Sequential:
    stem = nn.Sequential()
    last = len(cfg.out_chs) - 1
    prev = in_chs
    for i, chs in enumerate(cfg.out_chs):
        # timm's rule: first conv strides when stride > 1; the last one too for stride 4 without pool
        stride = 2 if (i == 0 and cfg.stride > 1) or (i == last and cfg.stride > 2 and not cfg.pool) else 1
        stem.add_module(f"conv{i + 1}", ConvNormAct(prev, chs, cfg.kernel_size, stride, act=cfg.act))
        prev = chs
    if cfg.pool:
        stem.add_module("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return stem


class CspNet(nn.Module):
    def __init__(self, arch: ArchConfig):
        super().__init__()
        validate(arch)
        self.arch = arch
        self.stem = build_stem(arch.stem, arch.in_chs)
        stages, prev = [], arch.stem.out_chs[-1]
        for s in arch.stages:
            stages.append(build_stage(s, prev))
            prev = s.out_chs
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(arch.head_dropout), nn.Linear(prev, arch.num_classes)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # residual branches start as identity: trains faster and more stably (timm does the same)
        for m in self.modules():
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def load_arch(source: ArchConfig | str | Path | dict) -> ArchConfig:
    """An ArchConfig from itself, a preset name, a JSON file path, or a parsed dict."""
    if isinstance(source, ArchConfig):
        return source
    if isinstance(source, dict):
        return ArchConfig.from_dict(source)
    text = str(source)
    if text in PRESETS:
        return PRESETS[text]()
    path = Path(text)
    if path.suffix.lower() == ".json" or path.exists():
        if not path.is_file():
            raise CspnasError(f"{path}: no such architecture file; pass a preset name (see `cspnas presets`) or an existing .json")
        try:
            raw = path.read_text()
        except OSError as e:
            raise CspnasError(f"{path}: cannot read ({e.strerror})") from None
        data = parse_json(raw, str(path))
        if isinstance(data, dict) and "arch" in data and "stages" not in data:
            data = data["arch"]  # accept files that wrap the arch (e.g. trial exports)
        try:
            return ArchConfig.from_dict(data)
        except ArchError as e:
            raise ArchError(f"{path}: {e}", code=e.code, field=e.field, stage=e.stage) from None
    raise CspnasError(f"unknown preset or file {text!r}; see `cspnas presets` for names, or pass an ARCH.json path")


def build_model(source: ArchConfig | str | Path | dict, *, in_chs: int | None = None,
                num_classes: int | None = None) -> CspNet:
    """Build a network from an ArchConfig, preset name or JSON path (optionally overriding I/O)."""
    arch = load_arch(source)
    if in_chs is not None or num_classes is not None:
        arch = arch.with_io(in_chs=in_chs, num_classes=num_classes)
    return CspNet(arch)
