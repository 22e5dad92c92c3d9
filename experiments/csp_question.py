"""The CSP question: do cross-stage-partial stages save compute at equal accuracy?

One skeleton (stem, three stages of fixed depth and width, dark blocks as in CSPDarknet),
built with every transition placement (csp, fusion_first, fusion_last) at split ratios
0.25 / 0.5 / 0.75, against plain (Darknet-style) stages at the same depth and width. A second
baseline, "plain-narrow", is plain with its widths scaled down (multiples of 8) until its MACs
match csp@0.5: equal compute instead of equal shape. For each network: params, MACs, CPU
latency (batch 1, 1 thread, float32, the search's default) and validation accuracy after
``--epochs`` of training, for ``--seeds`` seeds (the spread says how much of a difference is noise).

Data: reduced CIFAR-10 (16x16, see experiments/common.py), ``--train-subset`` training images,
2,000 validation images (val_fraction 0.2). Partial results are written after every training
run; ``--resume`` continues an interrupted run; ``--check VARIANT...`` re-trains variants and
compares with the committed file.

    python experiments/csp_question.py                   # results/benchmarks/csp_question.json
    python experiments/csp_question.py --smoke --out /tmp/c.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import REPO, add_reruns_flag, check_reproduces, committed_report, machine, small_cifar10, train_arch, \
    write_json

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency
from cspnas.data import load_dataset
from cspnas.models import build_model
from cspnas.space import ArchConfig, StageConfig, StemConfig, arch_from_dict

DEPTHS, STRIDES = (1, 2, 2), (1, 2, 2)


def skeleton(widths: tuple[int, ...], stem: int, stage_type: str, split: float, in_chs: int,
             num_classes: int) -> ArchConfig:
    stages = tuple(StageConfig(depth=d, out_chs=w, stride=s, stage_type=stage_type, block_type="dark",
                               split_ratio=split, bottle_ratio=0.5) for d, w, s in zip(DEPTHS, widths, STRIDES))
    return ArchConfig(stem=StemConfig(out_chs=(stem,)), stages=stages, in_chs=in_chs, num_classes=num_classes)


def macs_of(arch: ArchConfig, size: int) -> int:
    return count_macs(build_model(arch), in_chs=arch.in_chs, input_size=size).total


def variants(widths: tuple[int, ...], stem: int, in_chs: int, num_classes: int, size: int) -> dict[str, ArchConfig]:
    out = {"plain": skeleton(widths, stem, "plain", 0.5, in_chs, num_classes)}
    for stage_type in ("csp", "fusion_first", "fusion_last"):
        for split in (0.25, 0.5, 0.75):
            out[f"{stage_type}@{split}"] = skeleton(widths, stem, stage_type, split, in_chs, num_classes)
    # plain-narrow: the width multiplier (widths rounded to multiples of 8) whose MACs come closest to csp@0.5
    target = macs_of(out["csp@0.5"], size)
    best = None
    for k in range(20, 101, 2):
        m = k / 100
        w = tuple(max(8, round(x * m / 8) * 8) for x in widths)
        arch = skeleton(w, max(8, round(stem * m / 8) * 8), "plain", 0.5, in_chs, num_classes)
        gap = abs(macs_of(arch, size) - target)
        if best is None or gap < best[0]:
            best = (gap, arch)
    out["plain-narrow"] = best[1]
    return out


def check(args, settings: dict, data) -> dict:
    """Does this machine reproduce the committed accuracies (seed 0) of the named variants?"""
    committed = committed_report(args.out, settings)
    unknown = sorted(set(args.check) - set(committed["rows"]))
    if unknown:
        sys.exit(f"--check {' '.join(unknown)}: no such variant; choose from {', '.join(committed['rows'])}")
    rows = committed["rows"]

    def rerun(name: str) -> float:
        return train_arch(arch_from_dict(rows[name]["arch"]), data, epochs=args.epochs, seed=0)["val_acc"]

    check_reproduces([(name, rows[name]["acc"]["0"], lambda name=name: rerun(name)) for name in args.check],
                     reruns=args.reruns)
    return committed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,64,128", help="stage widths")
    ap.add_argument("--stem", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="digits, tiny widths, 1 epoch, 1 seed")
    ap.add_argument("--check", nargs="+", metavar="VARIANT", default=None,
                    help="re-train these variants (seed 0) and compare with --out (exit 1 on a mismatch); "
                         "writes nothing")
    add_reruns_flag(ap)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "csp_question.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.widths, args.stem, args.epochs, args.seeds, args.train_subset = "16,16,16", 8, 1, 1, None
        data, data_note = load_dataset("digits", val_fraction=0.2), "digits (bundled), smoke"
    else:
        folder = small_cifar10()
        data = load_dataset("folder", folder, val_fraction=0.2, train_subset=args.train_subset)
        data_note = f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py"
    widths = tuple(int(w) for w in args.widths.split(","))
    settings = {"widths": widths, "stem": args.stem, "depths": DEPTHS, "strides": STRIDES, "block": "dark",
                "bottle_ratio": 0.5, "epochs": args.epochs, "seeds": args.seeds, "train_subset": args.train_subset,
                "data": data_note, "data_summary": data.summary(),
                "latency": "cpu, batch 1, 1 thread, float32, median of >= 0.1 s of timed runs"}
    settings = json.loads(json.dumps(settings))  # tuples -> lists, to compare with a resumed file

    if args.check:
        return check(args, settings, data)
    archs = variants(widths, args.stem, data.in_chs, data.num_classes, data.input_size)
    rows: dict[str, dict] = {}
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("settings") == settings:
            rows = previous["rows"]
    t0 = time.perf_counter()
    # Cost first, all together and before any training, so latency sees a quiet machine.
    latency = LatencySettings(in_chs=data.in_chs, input_size=data.input_size)
    for name, arch in archs.items():
        if name not in rows:
            model = build_model(arch)
            rows[name] = {"summary": arch.summary(), "params": count_params(model),
                          "macs": macs_of(arch, data.input_size), "macs_224": macs_of(arch, 224),
                          "latency_ms": measure_latency(model, latency).ms, "acc": {},
                          "arch": arch.to_dict()}
    for seed in range(args.seeds):
        for name, arch in archs.items():
            if str(seed) in rows[name]["acc"]:
                continue
            run = train_arch(arch, data, epochs=args.epochs, seed=seed)
            rows[name]["acc"][str(seed)] = run["val_acc"]
            print(f"seed {seed} {name:16s} {rows[name]['macs'] / 1e6:6.1f}M MACs  acc {run['val_acc']:.3f} "
                  f"({run['train_s']:.0f} s)", flush=True)
            write_json(args.out, {"experiment": "csp_question", "complete": False, "settings": settings, "rows": rows})

    plain = rows["plain"]
    plain_accs = list(plain["acc"].values())
    # noise yardstick: the spread of one network's accuracy over seeds, pooled over all networks
    spreads = [max(r["acc"].values()) - min(r["acc"].values()) for r in rows.values() if len(r["acc"]) > 1]
    table = []
    for name, r in rows.items():
        accs = list(r["acc"].values())
        table.append({"variant": name, "params": r["params"], "macs": r["macs"], "latency_ms": r["latency_ms"],
                      "macs_vs_plain": r["macs"] / plain["macs"], "params_vs_plain": r["params"] / plain["params"],
                      "latency_vs_plain": r["latency_ms"] / plain["latency_ms"],
                      "acc_mean": statistics.mean(accs), "acc_vs_plain": statistics.mean(accs) - statistics.mean(plain_accs)})
    noise = statistics.mean(spreads) if spreads else None
    report = {"experiment": "csp_question", "complete": True, "settings": settings, "table": table,
              "seed_spread_mean": noise, "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
              "rows": rows}
    write_json(args.out, report)
    for t in table:
        print(f"{t['variant']:16s} MACs x{t['macs_vs_plain']:.2f} params x{t['params_vs_plain']:.2f} "
              f"latency x{t['latency_vs_plain']:.2f} acc {t['acc_mean']:.3f} ({t['acc_vs_plain']:+.3f})")
    return report


if __name__ == "__main__":
    main()
