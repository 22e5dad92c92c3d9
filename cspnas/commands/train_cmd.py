"""`cspnas train ARCH.json --dataset D --epochs N`: train one architecture fully and test it."""
from __future__ import annotations

import sys
from pathlib import Path

from cspnas.commands.flags import add_setting, given
from cspnas.errors import CspnasError
from cspnas.train.config import TrainConfig


def register(sub) -> None:
    p = sub.add_parser("train", help="train one architecture (e.g. an exported arch.json) and test it")
    p.add_argument("arch", metavar="ARCH.json|PRESET",
                   help="architecture file (its num_classes/in_chs are replaced by the data set's)")
    p.add_argument("--dataset", default=None, help="data set name, e.g. digits, cifar10, mnist, folder")
    p.add_argument("--data-dir", default=None, metavar="PATH", help="where the data set's files are")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (the LR schedule spans all of them)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default trained/<arch>-<dataset>); must be new or empty unless --resume")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out (same settings)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    for flag, kind in (("--batch-size", int), ("--lr", float), ("--seed", int)):
        add_setting(p, flag, TrainConfig, type=kind)
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from cspnas.train.full import CHECKPOINT, FullTrainSettings, partial_dir, saved_settings, train_full

    names = ("dataset", "epochs", "batch_size", "lr", "seed")
    out = Path(args.out) if args.out else _default_out(args.arch, args.dataset)
    # a resume takes whatever was not given on the command line from the saved settings
    saved = saved_settings(out) if args.resume else {}
    values = {**{k: saved[k] for k in names if saved.get(k) is not None}, **given(args, *names)}
    for key in ("dataset", "epochs"):
        if key not in values:
            raise CspnasError(f"--{key} is required (e.g. --dataset digits --epochs 30)")
    settings = FullTrainSettings(**values)
    print(f"training {args.arch} on {settings.dataset} for {settings.epochs} epoch(s) into {out}"
          + (" (resuming)" if args.resume else ""))

    def report(epoch) -> None:
        print(f"epoch {epoch.epoch}/{settings.epochs}: loss {epoch.train_loss:.4f}, "
              f"val acc {100 * epoch.val_acc:.2f}%, {epoch.seconds:.1f} s", flush=True)

    try:
        result = train_full(args.arch, out, settings, data_dir=args.data_dir, resume=args.resume, on_epoch=report,
                            **given(args, "device"))
    except KeyboardInterrupt:
        if (partial_dir(out) / CHECKPOINT).is_file():
            print(f"the finished epochs are kept in {partial_dir(out)}; continue with "
                  f"`cspnas train {args.arch} --out {out} --resume`", file=sys.stderr)
        raise
    m = result.metrics
    test = "no test split" if m["test_acc"] is None else f"test acc {100 * m['test_acc']:.2f}%"
    print(f"{test}, final val acc {100 * m['final_val_acc']:.2f}% after {m['epochs_done']} epoch(s); "
          f"wrote weights.safetensors, metrics.json, arch.json to {result.out}")
    return 0


def _default_out(arch: str, dataset: str | None) -> Path:
    stem = Path(arch).stem if arch.lower().endswith(".json") else arch
    if stem == "arch":  # exports are all called arch.json: name it after their folder instead
        stem = Path(arch).resolve().parent.name or stem
    return Path("trained") / f"{stem}-{dataset or 'data'}"
