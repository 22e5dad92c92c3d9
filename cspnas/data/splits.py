"""Deterministic, stratified ways to split and subsample labelled data."""
from __future__ import annotations

import numpy as np
import torch


def stratified_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation of ``range(len(y))`` whose every prefix is (nearly) class-balanced.

    Each class is shuffled, then samples are interleaved by their relative rank within their
    class, so the first k indices hold about k * n_c / N samples of class c. One ordering
    serves every split size, and the same seed always gives the same order.
    """
    labels = y.cpu().numpy()
    shuffled = np.random.default_rng(seed).permutation(len(labels))
    ys = labels[shuffled]
    # Rank of each (shuffled) sample among the samples of its own class.
    by_class = np.argsort(ys, kind="stable")
    counts = np.bincount(ys)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(ys), dtype=np.float64)
    rank[by_class] = np.arange(len(ys)) - starts[ys[by_class]]
    key = (rank + 0.5) / counts[ys]
    return torch.from_numpy(shuffled[np.argsort(key, kind="stable")])


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held_out) with ``round(fraction * N)`` held out, both sorted."""
    order = stratified_order(y, seed).numpy()
    n_held = int(round(fraction * len(y)))
    return torch.from_numpy(np.sort(order[n_held:])), torch.from_numpy(np.sort(order[:n_held]))


def stratified_subset(y: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced random subset of exactly ``size`` samples."""
    return torch.from_numpy(np.sort(stratified_order(y, seed).numpy()[:size]))
