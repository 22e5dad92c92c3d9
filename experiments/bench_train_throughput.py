"""Training throughput: cspnas's on-device batched loop vs a conventional DataLoader loop.

Both train the same small CNN from the same initial weights on the same data for the same
number of epochs with the same optimizer settings and LR schedule. The only difference is the
input pipeline:

* cspnas.train.train: uint8 data on the device, crop+flip for a whole batch in one gather;
* conventional: a Dataset whose __getitem__ normalises, reflect-pads, randomly crops and flips
  one image with torch ops, batched by torch.utils.data.DataLoader (``--workers`` processes);
  with ``--device cuda`` batches go to the GPU from pinned memory, and both loops use the same
  bf16 autocast and channels_last (TrainConfig's defaults), so only the input pipeline differs.

images/s counts training steps only (evaluation excluded) for both. Other processes on the
machine add noise, so both run once untimed on a few batches (one-time setup), then
``--repeats`` times in alternating order; the report keeps every run and compares medians
and best runs (the load average before/after is recorded too: on a busy machine trust neither).
Run from the repository root, e.g. ``python experiments/bench_train_throughput.py --smoke``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("cspnas") is None:  # allow running from a plain checkout
    sys.path.insert(0, str(REPO))

from cspnas.data import ImageData, load_dataset  # noqa: E402
from cspnas.train import TrainConfig, evaluate, train  # noqa: E402
from cspnas.train.loop import _autocast, lr_at  # noqa: E402


def small_cnn(in_chs: int, num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*block(in_chs, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


class PerSampleDataset(Dataset):
    """The usual torchvision-style pipeline, one image at a time."""

    def __init__(self, data: ImageData, pad: int):
        self.x, self.y, self.pad, self.hflip = data.train_x, data.train_y, pad, data.hflip
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = (self.x[i].float() / 255 - self.mean) / self.std
        _, h, w = img.shape
        if self.pad:
            img = F.pad(img[None], (self.pad,) * 4, mode="reflect")[0]
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            img = img[:, top:top + h, left:left + w]
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def conventional_train(model: nn.Module, data: ImageData, cfg: TrainConfig, workers: int) -> dict:
    device = torch.device(cfg.device)
    on_cuda = device.type == "cuda"
    channels_last = on_cuda and cfg.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    loader = DataLoader(PerSampleDataset(data, cfg.crop_padding(data.input_size)), batch_size=cfg.batch_size,
                        shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=on_cuda, generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    total = cfg.epochs * len(loader)
    warmup = min(round(cfg.warmup_epochs * len(loader)), total)
    step, epochs = 0, []
    for _ in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr)
            with _autocast(device, cfg.bf16):  # the same precision rule as cspnas.train.train
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if on_cuda:
            torch.cuda.synchronize()  # the GPU may still be working through queued steps
        seconds = time.perf_counter() - start
        acc = evaluate(model, data.val_x, data.val_y, mean=data.mean, std=data.std, device=device, bf16=cfg.bf16)
        images = len(loader) * cfg.batch_size
        epochs.append({"images_per_s": images / seconds, "train_seconds": seconds, "val_acc": acc})
    train_s = sum(e["train_seconds"] for e in epochs)
    return {"images_per_s": images * cfg.epochs / train_s, "train_seconds": train_s,
            "final_val_acc": epochs[-1]["val_acc"], "epochs": epochs}


def cspnas_train(model: nn.Module, data: ImageData, cfg: TrainConfig) -> dict:
    # Per epoch: train() drops the ragged last batch (or uses one batch of everything if smaller).
    images = len(data.train_x) // cfg.batch_size * cfg.batch_size or len(data.train_x)
    epochs: list[dict] = []
    result = train(model, data, cfg, on_epoch=lambda r: epochs.append(
        {"images_per_s": r.images_per_s, "train_seconds": images / r.images_per_s, "val_acc": r.val_acc}))
    return {"images_per_s": result.images_per_s, "train_seconds": sum(e["train_seconds"] for e in epochs),
            "final_val_acc": result.final_val_acc, "epochs": epochs}


def run_both(data: ImageData, cfg: TrainConfig, workers: int, repeats: int) -> tuple[list[dict], list[dict]]:
    """Alternate the order each repeat so slow drift in background load hits both equally."""
    def ours() -> dict:
        return cspnas_train(small_cnn(data.in_chs, data.num_classes, cfg.seed), data, cfg)

    def theirs() -> dict:
        return conventional_train(small_cnn(data.in_chs, data.num_classes, cfg.seed), data, cfg, workers)

    warm = replace(data, train_x=data.train_x[:2 * cfg.batch_size], train_y=data.train_y[:2 * cfg.batch_size],
                   val_x=data.val_x[:cfg.batch_size], val_y=data.val_y[:cfg.batch_size])
    small = replace(cfg, epochs=1)
    cspnas_train(small_cnn(data.in_chs, data.num_classes, cfg.seed), warm, small)
    conventional_train(small_cnn(data.in_chs, data.num_classes, cfg.seed), warm, small, workers)
    ours_runs, theirs_runs = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ours_runs.append(ours())
            theirs_runs.append(theirs())
        else:
            theirs_runs.append(theirs())
            ours_runs.append(ours())
    return ours_runs, theirs_runs


def summarize(runs: list[dict]) -> dict:
    return {"images_per_s": statistics.median(r["images_per_s"] for r in runs),
            # Background load only ever slows a run down, so the best run is the least disturbed.
            "best_images_per_s": max(r["images_per_s"] for r in runs),
            "final_val_acc": statistics.median(r["final_val_acc"] for r in runs),
            "runs": runs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None, help="decoded-data cache (default ~/.cache/cspnas)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for the conventional loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 + channels_last on CUDA, both loops)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per loop (median is reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--smoke", action="store_true", help="tiny run: digits, 1 epoch, 1 repeat")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "train_throughput.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dataset, args.data_dir, args.epochs, args.train_subset, args.repeats = "digits", None, 1, None, 1

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_dir, cache_dir=args.cache_dir, train_subset=args.train_subset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, device=args.device)
    load_before = os.getloadavg()[0]
    ours_runs, theirs_runs = run_both(data, cfg, args.workers, args.repeats)
    ours, theirs = summarize(ours_runs), summarize(theirs_runs)
    report = {
        "benchmark": "train_throughput",
        "settings": {"dataset": args.dataset, "data": data.summary(), "epochs": args.epochs,
                     "batch_size": args.batch_size, "train_subset": args.train_subset,
                     "conventional_workers": args.workers, "seed": args.seed, "smoke": args.smoke,
                     "repeats": args.repeats,
                     "crop_pad": cfg.crop_padding(data.input_size), "hflip": data.hflip},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                    "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "cspnas": ours,
        "conventional": theirs,
        "ratio_images_per_s": ours["images_per_s"] / theirs["images_per_s"],
        "ratio_best_images_per_s": ours["best_images_per_s"] / theirs["best_images_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.dataset}: cspnas {ours['images_per_s']:.0f} img/s (val acc {ours['final_val_acc']:.3f}), "
          f"conventional {theirs['images_per_s']:.0f} img/s (val acc {theirs['final_val_acc']:.3f}), "
          f"ratio {report['ratio_images_per_s']:.2f}x (best runs: {report['ratio_best_images_per_s']:.2f}x) "
          f"-> {args.out}")
    return report


if __name__ == "__main__":
    main()
