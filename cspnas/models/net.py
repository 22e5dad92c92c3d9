"""The network builder: ArchConfig -> nn.Module (stem, stages, classifier head)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cspnas.errors import ArchError, CspnasError
from cspnas.models.blocks import ConvNormAct
from cspnas.models.families import MEMBERS, family_member
from cspnas.models.presets import PRESETS
from cspnas.models.stages import build_stage
from cspnas.space.arch import ArchConfig, StemConfig, parse_json, validate


def build_stem(cfg: StemConfig, in_chs: int) -> nn.Sequential:
    stem = nn.Sequential()
    prev = in_chs
    for i, (chs, stride) in enumerate(zip(cfg.out_chs, cfg.conv_strides())):
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

    def features(self, out_indices: Sequence[int] | None = None) -> "CspFeatures":
        """This network as a backbone (sharing its modules and weights); see CspFeatures."""
        return CspFeatures(self, out_indices)


class FeatureInfo:
    """Channels, reduction and module of each output of a features-only model, as timm's
    `model.feature_info`: `.channels()`, `.reduction()`, `.module_name()`, or one entry by index."""

    def __init__(self, entries: list[dict]):
        self.info = entries

    def channels(self) -> list[int]:
        return [e["num_chs"] for e in self.info]

    def reduction(self) -> list[int]:
        return [e["reduction"] for e in self.info]

    def module_name(self) -> list[str]:
        return [e["module"] for e in self.info]

    def __getitem__(self, index: int) -> dict:
        return self.info[index]

    def __len__(self) -> int:
        return len(self.info)


class CspFeatures(nn.Module):
    """A CSP network as a detection/segmentation backbone: forward returns the feature maps named by
    `out_indices` (indices into `arch.feature_levels()`: the last map at each reduction, stem first,
    as timm's `features_only`), as a list. The head and the stages after the last one asked for are
    dropped; the remaining parameters keep their CspNet names, so its state_dict loads here."""

    def __init__(self, net: CspNet, out_indices: Sequence[int] | None = None):
        super().__init__()
        levels = net.arch.feature_levels()
        indices = tuple(range(len(levels))) if out_indices is None else tuple(out_indices)
        if (not indices or any(isinstance(i, bool) or not isinstance(i, int) for i in indices)
                or list(indices) != sorted(set(indices)) or not 0 <= indices[0] <= indices[-1] < len(levels)):
            raise CspnasError(f"out_indices {list(indices)}: must be increasing feature levels in 0..{len(levels) - 1} "
                              f"of this architecture (reductions {[m['reduction'] for m in levels]})")
        self.arch = net.arch
        self.out_indices = indices
        self.feature_info = FeatureInfo([levels[i] for i in indices])
        self.taps = tuple(levels[i]["module"] for i in indices)
        self.stem = net.stem
        needed = max((i + 1 for i in range(len(net.stages)) if f"stages.{i}" in self.taps), default=0)
        self.stages = nn.Sequential(*list(net.stages)[:needed])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name, module in [*(("stem." + n, m) for n, m in self.stem.named_children()),
                             *((f"stages.{i}", m) for i, m in enumerate(self.stages))]:
            x = module(x)
            if name in self.taps:
                out.append(x)
                if len(out) == len(self.taps):
                    break
        return out


def load_arch(source: ArchConfig | str | Path | dict) -> ArchConfig:
    """An ArchConfig from itself, a preset name, a JSON file path, or a parsed dict."""
    if isinstance(source, ArchConfig):
        return source
    if isinstance(source, dict):
        return ArchConfig.from_dict(source)
    text = str(source)
    if text in PRESETS:
        return PRESETS[text]()
    if text in MEMBERS:  # a hand-designed family member, for 32 px inputs (cspnas.models.families)
        return family_member(*MEMBERS[text])
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
                num_classes: int | None = None, features_only: bool = False,
                out_indices: Sequence[int] | None = None) -> CspNet | CspFeatures:
    """Build a network from an ArchConfig, preset name or JSON path (optionally overriding I/O).

    `features_only=True` returns the backbone (CspFeatures): forward gives the feature maps at
    `out_indices` (default: all levels), and `.feature_info` their channels and reductions."""
    arch = load_arch(source)
    if in_chs is not None or num_classes is not None:
        arch = arch.with_io(in_chs=in_chs, num_classes=num_classes)
    net = CspNet(arch)
    return net.features(out_indices) if features_only else net
