"""Proxy fidelity: does brief training (the search's score) rank architectures like long training?

Takes ``--archs`` architectures spread over the default space (distinct, at evenly spaced MAC
ranks of a random pool), trains each twice from the same initial weights on the same data:
briefly (``--brief-epochs``, the setting the search experiments use) and for much longer
(``--long-epochs``), and reports the Spearman and Kendall rank correlations between the two
validation accuracies, with a bootstrap 95% interval. For comparison it also reports how well
trainless proxies rank the long-training accuracies: MACs, and every zero-cost score the search
records (cspnas.cost.zero_cost: synflow, NASWOT, grad_norm, params), each scored as the search
scores a candidate (weights initialised with seed 0, the ``SCORE_IMAGES`` training images chosen
by ``--seed``), each with its bootstrap interval (``result["vs_long"]``).

Data: reduced CIFAR-10 (16x16, see experiments/common.py), ``--train-subset`` training images,
1,000 validation images. Partial results are written after every architecture; ``--resume``
continues an interrupted run with the same settings (rows without scores get them); ``--check N``
re-trains the first N architectures briefly and compares with the committed file; ``--add-scores``
adds the zero-cost scores to a finished file without training anything (seconds, not hours);
``--extend FILE`` keeps the rows of a finished FILE made with the same settings (but fewer archs) and
trains only the ``--archs`` minus its count further ones, spread over the same pool's MAC ranks.

``result["front_order"]`` answers the finalists' question (issue 14): among the architectures on the
brief-training front (brief accuracy vs MACs), how often does long training flip their order
(Kendall tau, share of discordant pairs), and how many stay on the long-training front.

    python experiments/proxy_fidelity.py                  # results/benchmarks/proxy_fidelity.json
    python experiments/proxy_fidelity.py --archs 30 --out results/benchmarks/proxy_fidelity_30.json \
        --extend results/benchmarks/proxy_fidelity.json   # the committed 12 + 18 more
    python experiments/proxy_fidelity.py --add-scores     # scores for the committed file's rows
    python experiments/proxy_fidelity.py --smoke --out /tmp/p.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import REPO, add_reruns_flag, bootstrap_ci, check_reproduces, committed_report, kendall, machine, \
    small_cifar10, spearman, spread_sample, train_arch, write_json

from cspnas.cost import count_macs, count_params
from cspnas.cost.zero_cost import SCORE_IMAGES, SCORES, zero_cost_scores
from cspnas.data import load_dataset
from cspnas.models import build_model
from cspnas.space import arch_from_dict
from cspnas.space.searchspace import load_space
from cspnas.train.quantized import image_batch


def scores(arch, data, seed: int) -> dict:
    """The zero-cost scores of `arch` as the search records them for a candidate (CostMeter)."""
    import torch

    torch.manual_seed(0)
    return zero_cost_scores(build_model(arch), *image_batch(data, SCORE_IMAGES, seed))


def add_scores(rows: list[dict], data, seed: int) -> None:
    """Give every row without them its zero-cost scores (in place)."""
    for row in rows:
        if any(s.column not in row for s in SCORES.values()):
            row.update(scores(arch_from_dict(row["arch"]), data, seed))


def rank_vs_long(rows: list[dict]) -> dict:
    """Spearman (bootstrap 95% interval) against long-training accuracy of brief training, MACs and
    every zero-cost score (higher-is-better; a score missing for a row leaves that row out, `n` says)."""
    proxies = {"brief_training": ("brief_acc", True), "macs": ("macs", True),
               **{s.name: (s.column, s.higher_is_better) for s in SCORES.values()}}
    out = {}
    for name, (key, higher) in proxies.items():
        pairs = [((1 if higher else -1) * r[key], r["long_acc"]) for r in rows if r.get(key) is not None]
        if len(pairs) < 3:
            out[name] = {"n": len(pairs)}
            continue
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        out[name] = {"spearman": spearman(a, b), "ci95": list(bootstrap_ci(a, b)), "n": len(pairs)}
    return out


def front_of(rows: list[dict], acc: str) -> list[dict]:
    """The rows no other row beats on both `acc` (higher) and MACs (lower)."""
    def beats(o, r):
        return o[acc] >= r[acc] and o["macs"] <= r["macs"] and (o[acc] > r[acc] or o["macs"] < r["macs"])
    return [r for r in rows if not any(beats(o, r) for o in rows)]


def front_order(rows: list[dict]) -> dict:
    """Does long training keep the brief front's order? (what finalists' retraining can change)"""
    front = front_of(rows, "brief_acc")
    brief, long = [r["brief_acc"] for r in front], [r["long_acc"] for r in front]
    pairs = [(i, j) for i in range(len(front)) for j in range(i + 1, len(front))]
    flipped = sum((brief[i] - brief[j]) * (long[i] - long[j]) < 0 for i, j in pairs)
    long_front = {r["arch_hash"] for r in front_of(rows, "long_acc")}
    return {"brief_front": len(front), "kendall_brief_vs_long": kendall(brief, long) if len(front) > 1 else None,
            "pairs": len(pairs), "pairs_flipped": flipped,
            "share_flipped": round(flipped / len(pairs), 3) if pairs else None,
            "still_on_long_front": sum(r["arch_hash"] in long_front for r in front),
            "long_front": len(long_front),
            "members": [{"summary": r["summary"], "macs": r["macs"], "brief_acc": r["brief_acc"],
                         "long_acc": r["long_acc"]} for r in sorted(front, key=lambda r: r["macs"])]}


def summarize(rows: list[dict]) -> dict:
    brief, long = [r["brief_acc"] for r in rows], [r["long_acc"] for r in rows]
    top = max(1, len(rows) // 4)
    best_long = set(sorted(range(len(rows)), key=lambda i: -long[i])[:top])
    best_brief = set(sorted(range(len(rows)), key=lambda i: -brief[i])[:top])
    return {
        "spearman_brief_vs_long": spearman(brief, long),
        "spearman_brief_vs_long_ci95": bootstrap_ci(brief, long),
        "kendall_brief_vs_long": kendall(brief, long),
        # zero-training proxies: "bigger is better" (positive = more MACs, higher accuracy)
        "spearman_macs_vs_long": spearman([r["macs"] for r in rows], long),
        "spearman_params_vs_long": spearman([r["params"] for r in rows], long),
        # every proxy with its interval: brief training, MACs, each zero-cost score (cspnas.cost.zero_cost)
        "vs_long": rank_vs_long(rows),
        "front_order": front_order(rows),
        f"top{top}_overlap": len(best_long & best_brief) / top,
        "median_brief_acc": statistics.median(brief), "median_long_acc": statistics.median(long),
        "brief_train_s_total": round(sum(r["brief_train_s"] for r in rows), 1),
        "long_train_s_total": round(sum(r["long_train_s"] for r in rows), 1),
        "references": {"reduced_training_proxies_literature": 0.6, "best_zero_cost_proxies_nb201": 0.8},
    }


def add_scores_to_file(args, settings: dict, data) -> dict:
    """--add-scores: the zero-cost scores of a finished file's rows, and the result recomputed; no training."""
    import sys

    if not args.out.is_file():
        sys.exit(f"--add-scores: {args.out} does not exist; run the experiment first")
    report = json.loads(args.out.read_text())
    if not report.get("complete") or report.get("settings") != settings:
        sys.exit(f"--add-scores: {args.out} is unfinished or was made with other settings; pass the flags it "
                 f"was made with (its settings: {json.dumps(report.get('settings', {}).get('archs'))} archs ...)")
    t0 = time.perf_counter()
    add_scores(report["rows"], data, args.seed)
    report["result"] = summarize(report["rows"])
    report["zero_cost"] = zero_cost_note(args, time.perf_counter() - t0, len(report["rows"]))
    write_json(args.out, report)
    print(json.dumps(report["result"]["vs_long"], indent=1))
    return report


def zero_cost_note(args, seconds: float, n: int) -> dict:
    return {"images": SCORE_IMAGES, "image_seed": args.seed, "init_seed": 0, "scores": list(SCORES),
            "seconds_per_arch": round(seconds / max(1, n), 3), "machine": machine()}


def check(args, settings: dict, data) -> dict:
    """Does this machine reproduce the committed brief-training accuracies?"""
    committed = committed_report(args.out, settings)

    def rerun(row: dict) -> float:
        return train_arch(arch_from_dict(row["arch"]), data, epochs=args.brief_epochs, seed=args.seed)["val_acc"]

    check_reproduces([(row["summary"], row["brief_acc"], lambda row=row: rerun(row))
                      for row in committed["rows"][:args.check]], reruns=args.reruns)
    return committed


def extended_rows(args, settings: dict) -> list[dict]:
    """--extend FILE: its rows, when FILE is finished and differs from `settings` only in having fewer archs."""
    import sys

    if not args.extend.is_file():
        sys.exit(f"--extend: {args.extend} does not exist; pass a finished proxy_fidelity result file")
    earlier = json.loads(args.extend.read_text())
    theirs = {k: v for k, v in earlier.get("settings", {}).items() if k not in ("archs", "extends")}
    if not earlier.get("complete") or theirs != {k: v for k, v in settings.items() if k != "archs"}:
        sys.exit(f"--extend: {args.extend} is unfinished or was made with other settings (flags other than --archs)")
    if len(earlier["rows"]) >= args.archs:
        sys.exit(f"--extend: {args.extend} already has {len(earlier['rows'])} archs; ask for more with --archs")
    return earlier["rows"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=None, help="architectures (default 12; --smoke: 3)")
    ap.add_argument("--brief-epochs", type=int, default=3)
    ap.add_argument("--long-epochs", type=int, default=30)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="architecture draw, data split and training seed")
    ap.add_argument("--resume", action="store_true", help="skip architectures already in --out (same settings)")
    ap.add_argument("--add-scores", action="store_true",
                    help="add the zero-cost scores to the finished --out file (same settings); trains nothing")
    ap.add_argument("--smoke", action="store_true", help="digits, 3 archs, 1 vs 2 epochs")
    ap.add_argument("--check", type=int, metavar="N", default=0,
                    help="re-train the first N architectures of --out briefly and compare with the file "
                         "(exit 1 on a mismatch); writes nothing")
    ap.add_argument("--extend", type=Path, metavar="FILE", default=None,
                    help="keep the rows of this finished file (same settings, fewer archs); train only the rest")
    add_reruns_flag(ap)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "proxy_fidelity.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.archs, args.brief_epochs, args.long_epochs, args.train_subset = args.archs or 3, 1, 2, None
        data = load_dataset("digits", split_seed=args.seed)
        data_note = "digits (bundled), smoke"
    else:
        args.archs = args.archs or 12
        folder = small_cifar10()
        data = load_dataset("folder", folder, split_seed=args.seed, train_subset=args.train_subset)
        data_note = f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py"
    settings = {"archs": args.archs, "brief_epochs": args.brief_epochs, "long_epochs": args.long_epochs,
                "train_subset": args.train_subset, "seed": args.seed, "space": "default", "data": data_note,
                "data_summary": data.summary(), "train": "cspnas TrainConfig defaults (batch 128, lr 0.2, "
                "SGD nesterov, label smoothing 0.1, warmup 0.5 epoch, linear decay), cpu"}

    kept = extended_rows(args, settings) if args.extend else []
    if kept:
        settings["extends"] = {"file": args.extend.name, "rows": len(kept)}
    if args.check:
        return check(args, settings, data)
    if args.add_scores:
        return add_scores_to_file(args, settings, data)
    rows: list[dict] = list(kept)
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("settings") == settings:
            rows = previous["rows"]
            add_scores(rows, data, args.seed)  # rows written before the scores existed
    archs = [arch_from_dict(r["arch"]) for r in kept] + spread_sample(
        load_space("default"), args.archs - len(kept), in_chs=data.in_chs, num_classes=data.num_classes,
        input_size=data.input_size, seed=args.seed, pool=40 if args.smoke else 400,
        exclude=frozenset(r["arch_hash"] for r in kept))
    t0, score_s, scored = time.perf_counter(), 0.0, 0
    for arch in archs:
        if any(r["arch_hash"] == arch.arch_hash() for r in rows):
            continue
        model = build_model(arch)
        started = time.perf_counter()
        zc = scores(arch, data, args.seed)
        score_s, scored = score_s + time.perf_counter() - started, scored + 1
        brief = train_arch(arch, data, epochs=args.brief_epochs, seed=args.seed)
        long = train_arch(arch, data, epochs=args.long_epochs, seed=args.seed)
        rows.append({"arch_hash": arch.arch_hash(), "summary": arch.summary(), "params": count_params(model),
                     "macs": count_macs(model, in_chs=data.in_chs, input_size=data.input_size).total,
                     "brief_acc": brief["val_acc"], "long_acc": long["val_acc"],
                     "long_acc_per_epoch": long["val_acc_per_epoch"],
                     "brief_train_s": brief["train_s"], "long_train_s": long["train_s"], **zc, "arch": arch.to_dict()})
        print(f"{len(rows)}/{len(archs)} {arch.summary()}: brief {brief['val_acc']:.3f} long {long['val_acc']:.3f} "
              f"({brief['train_s'] + long['train_s']:.0f} s)", flush=True)
        write_json(args.out, {"experiment": "proxy_fidelity", "complete": False, "settings": settings, "rows": rows})

    result = summarize(rows)
    report = {"experiment": "proxy_fidelity", "complete": True, "settings": settings, "result": result,
              "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
              "zero_cost": zero_cost_note(args, score_s, scored), "rows": rows}
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in result.items() if k != "references"}, indent=1))
    return report


if __name__ == "__main__":
    main()
