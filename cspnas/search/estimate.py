"""Before a search starts: what one trial, and the whole search, will roughly cost.

MACs of a few random members of the space give the typical (median) candidate and the spread;
a short real training of that candidate on the training device (two tiny epochs of the proxy
trainer, same recipe) gives its throughput. Training time is taken as proportional to MACs
across candidates. Rough by design: it exists to catch a search that would take days (a
64x64 folder data set ran 402 s per epoch per trial on 2 CPU cores) before it starts.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from cspnas.data import ImageData
from cspnas.space.searchspace import SearchSpace
from cspnas.train import TrainConfig
from cspnas.units import format_count

SAMPLES = 5  # random members of the space whose MACs are counted
SLOW_EPOCH_S = 60.0  # beyond this, suggest --image-size
EVAL_SHARE = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


@dataclass(frozen=True)
class CostEstimate:
    typical_macs: int  # median over the samples, at the training image size
    macs_range: tuple[int, int]
    images_per_s: float  # the typical candidate's training throughput on the training device
    epoch_s: float  # the typical candidate: one epoch, training + validation
    epoch_range_s: tuple[float, float]
    trial_s: float  # typical candidate, every epoch
    search_s: float  # budget (architectures trained) x trial / concurrency
    epochs: int
    budget: int
    concurrency: int
    device: str
    image_size: int
    probe_s: float  # what making this estimate took

    def lines(self) -> list[str]:
        lo, hi = self.epoch_range_s
        out = [f"estimate: a typical candidate ({format_count(self.typical_macs)} MACs at {self.image_size}x"
               f"{self.image_size}) trains at ~{self.images_per_s:,.0f} images/s on {self.device}: "
               f"~{_dur(self.epoch_s)} per epoch (from {_dur(lo)} to {_dur(hi)} across the space), "
               f"~{_dur(self.trial_s)} per trial of {self.epochs} epoch(s)",
               f"estimate: {self.budget} trials, {self.concurrency} at a time: roughly {_dur(self.search_s)} "
               f"(probe took {self.probe_s:.1f} s)"]
        if self.epoch_s > SLOW_EPOCH_S and self.image_size > 16:
            smaller = max(16, self.image_size // 2)
            out.append(f"hint: epochs this slow make a long search; --image-size {smaller} trains and measures at "
                       f"{smaller}x{smaller} (about {(self.image_size / smaller) ** 2:.0f}x fewer MACs)")
        return out


def estimate_search(space: SearchSpace, data: ImageData, train: TrainConfig, *, budget: int, concurrency: int,
                    threads: int, seed: int = 0) -> CostEstimate | None:
    """Sample, count, probe; None when the training device is not on this machine (a cluster's GPUs)."""
    import torch

    from cspnas.cost import count_macs
    from cspnas.models import build_model
    from cspnas.train import resolve_device
    from cspnas.train import train as run_training

    if train.device.startswith("cuda") and not torch.cuda.is_available():
        return None
    start = time.perf_counter()
    rng = random.Random(seed)
    macs = {}
    for _ in range(SAMPLES):
        arch = space.sample(_RandomTrial(rng), in_chs=data.in_chs, num_classes=data.num_classes)
        macs[arch.arch_hash()] = (count_macs(build_model(arch), in_chs=data.in_chs,
                                             input_size=data.input_size).total, arch)
    ordered = sorted(macs.values(), key=lambda m: m[0])
    typical_macs, typical = ordered[(len(ordered) - 1) // 2]

    device = str(resolve_device(train.device))
    # two tiny epochs of the real trainer: the first pays one-time costs, the second is timed
    batch = train.batch_size
    probe = replace(data, train_x=data.train_x[:2 * batch], train_y=data.train_y[:2 * batch],
                    val_x=data.val_x[:batch], val_y=data.val_y[:batch])
    cfg = replace(train, epochs=2, device=device)
    reports = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        run_training(build_model(typical), probe, cfg, on_epoch=reports.append)
    finally:
        torch.set_num_threads(before)
    images_per_s = reports[-1].images_per_s

    def epoch_s(m: int) -> float:
        speed = images_per_s * typical_macs / max(m, 1)
        return (len(data.train_x) + EVAL_SHARE * len(data.val_x)) / speed

    typical_epoch = epoch_s(typical_macs)
    trial = typical_epoch * train.epochs
    return CostEstimate(typical_macs=typical_macs, macs_range=(ordered[0][0], ordered[-1][0]),
                        images_per_s=images_per_s, epoch_s=typical_epoch,
                        epoch_range_s=(epoch_s(ordered[0][0]), epoch_s(ordered[-1][0])), trial_s=trial,
                        search_s=budget * trial / concurrency, epochs=train.epochs, budget=budget,
                        concurrency=concurrency, device=device, image_size=data.input_size,
                        probe_s=time.perf_counter() - start)


class _RandomTrial:
    """Answers the space's define-by-run questions at random (an optuna.Trial stand-in: no study needed)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def suggest_categorical(self, name: str, choices):
        return self.rng.choice(list(choices))


def _dur(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"

