"""Stages: the CSP split with its transition placement, and the plain (no split) stage."""
from __future__ import annotations

import torch
from torch import nn

from cspnas.models.blocks import BLOCKS, ConvNormAct
from cspnas.space.arch import StageConfig, stage_channels
from cspnas.space.kinds import BLOCK_KINDS, STAGE_KINDS


def _blocks(cfg: StageConfig, ins, mids, outs) -> nn.Sequential:
    block = BLOCKS[cfg.block_type]
    groups = cfg.groups if BLOCK_KINDS[cfg.block_type].takes_groups else 1
    return nn.Sequential(*[
        block(i, o, m, groups=groups, act=cfg.act, se_ratio=cfg.se_ratio) for i, m, o in zip(ins, mids, outs)
    ])


class CrossStage(nn.Module):
    """Cross-stage partial stage: split channels, blocks on one part, fuse per `stage_type`.

    csp:          [blocks -> transition_b] ++ skip -> transition
    fusion_first: [blocks] ++ skip -> transition
    fusion_last:  [blocks -> transition_b] ++ skip
    """

    def __init__(self, cfg: StageConfig, in_chs: int):
        super().__init__()
        plan = stage_channels(cfg, in_chs)
        # Part order follows timm so weights map one-to-one: csp/fusion_last put the skip part
        # first, fusion_first (timm's cs3) the block part first.
        self.blocks_first = cfg.stage_type == "fusion_first"
        sizes = [plan.block_in_chs, plan.skip_chs]
        self.split_sizes = sizes if self.blocks_first else sizes[::-1]
        self.conv_down = (
            ConvNormAct(in_chs, plan.down_chs, 3, cfg.stride, groups=cfg.groups, act=cfg.act)
            if plan.down_chs else nn.Identity()
        )
        prev = plan.down_chs or in_chs
        self.conv_exp = ConvNormAct(prev, plan.exp_chs, 1, act=None if cfg.cross_linear else cfg.act)
        self.blocks = _blocks(cfg, plan.block_chs_in, plan.block_mid, plan.block_out)
        last = plan.block_out[-1]
        kind = STAGE_KINDS[cfg.stage_type]
        self.conv_transition_b = (
            ConvNormAct(last, plan.out_b_chs, 1, act=cfg.act) if kind.transition_b else nn.Identity()
        )
        fused = (plan.out_b_chs if kind.transition_b else last) + plan.skip_chs
        self.conv_transition = ConvNormAct(fused, cfg.out_chs, 1, act=cfg.act) if kind.transition else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(self.conv_down(x))
        if self.blocks_first:
            xb, xs = x.split(self.split_sizes, dim=1)
            return self.conv_transition(torch.cat([self.blocks(xb), xs], dim=1))
        xs, xb = x.split(self.split_sizes, dim=1)
        xb = self.conv_transition_b(self.blocks(xb))
        return self.conv_transition(torch.cat([xs, xb], dim=1))


class PlainStage(nn.Module):
    """No split (the baseline network): strided 3x3 down conv, then blocks on all channels."""

    def __init__(self, cfg: StageConfig, in_chs: int):
        super().__init__()
        plan = stage_channels(cfg, in_chs)
        self.conv_down = ConvNormAct(in_chs, plan.down_chs, 3, cfg.stride, groups=cfg.groups, act=cfg.act)
        self.blocks = _blocks(cfg, plan.block_chs_in, plan.block_mid, plan.block_out)
        last = plan.block_out[-1]
        # dense blocks or block_ratio != 1 change the width: map back to out_chs
        self.conv_transition = ConvNormAct(last, cfg.out_chs, 1, act=cfg.act) if last != cfg.out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_transition(self.blocks(self.conv_down(x)))


def build_stage(cfg: StageConfig, in_chs: int) -> nn.Module:
    return CrossStage(cfg, in_chs) if STAGE_KINDS[cfg.stage_type].split else PlainStage(cfg, in_chs)
