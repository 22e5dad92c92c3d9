"""Headline: at a latency budget, is the network cspnas finds more accurate after full training than
the hand-designed CSP families?

Steps, each recorded in ``--out`` as soon as it is done (``--resume`` continues an interrupted run with the
same settings; finished searches, trainings and timings are never redone):

 1. **Baselines**: every member of the hand-designed families (`cspnas.models.families`: ResNet-, CSPResNet-,
    CSPDarknet-, CS3/C3- and Darknet-style, four widths each) at the data's input size, costed exactly as the
    search costs a candidate (`runner.latency_settings` of the search's settings).
 2. **Levels**: three latency levels spanning the baselines (geometric between the second fastest and the
    slowest member; the slowest is also the searches' limit, so every search has a pick at the top level).
 3. **Searches**: one cspnas search (TPE) and one random search (the control), same budget, objectives
    accuracy and latency, ``--target-latency`` the slowest baseline's, over ``--space`` (default
    search_spaces/families.yaml: the default space's knobs over the families' widths), their (noise-aware)
    fronts retrained for ``--final-epochs`` as finalists.
 4. **Picks**: at each level, from each search's exact front (the noise-aware one can tie its fast end away),
    the member at or under it with the best final validation accuracy where one there was retrained, else the
    best brief accuracy.
 5. **Full training**: every baseline member and every pick, ``--seeds`` seeds, ``--full-epochs`` epochs of the
    same recipe, test-set accuracy.
 6. **Latency**: every compared model re-timed in one interleaved pass (5 passes; median).
 7. **Verdict** per level (the issue's goal): the cspnas pick beats the best baseline at equal or lower latency
    by >= 1 point of mean test accuracy and by more than twice the seed spread, or matches it (within the
    spread) at <= 0.7x its latency; and it beats the random pick.

Data: on the CPU, the reduced CIFAR-10 of experiments/common.py (16x16); ``--full-data`` (with ``--device
cuda``) the whole CIFAR-10 at 32x32. Writes ``--out`` (JSON) and the plot beside it (SVG: test accuracy vs
latency, families as curves, picks as points with seed error bars).

    python experiments/headline.py                     # results/benchmarks/headline.json, ~2 h on 2 cores
    python experiments/headline.py --device cuda --full-data --budget 200 --out results/benchmarks/headline_gpu.json
    python experiments/headline.py --smoke --out /tmp/h.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import fields
from pathlib import Path

from common import CACHE, REPO, cifar10_jpeg, machine, small_cifar10, write_json

from cspnas.data import load_dataset
from cspnas.models.families import members
from cspnas.objectives import OBJECTIVES
from cspnas.search.costs import CostMeter
from cspnas.search.runner import latency_settings, run_search
from cspnas.search.settings import Constraints, SearchSettings, search_training
from cspnas.space import arch_from_dict

METHODS = {"cspnas": "tpe", "random": "random"}  # search arm -> sampler
# a diagnostic arm, no search of its own: the cspnas search's exact-front member with the best brief accuracy at
# or under the level, whether or not it was a finalist (is the finalist rule, or the brief proxy, what falls short?)
BRIEF_BEST = "cspnas-brief"
PASSES = 5  # interleaved re-timing passes of every compared model


def _search_settings(args, name: str, sampler: str, data_spec: dict, top_ms: float | None) -> SearchSettings:
    extra = {}
    names = {f.name for f in fields(SearchSettings)}
    if args.finalists and "finalists" in names:  # finalists: the issue "an accuracy axis users can trust"
        extra = {"finalists": args.finalists, "final_epochs": args.final_epochs}
    return SearchSettings(name=name, results_dir=str(args.work), budget=args.budget, sampler=sampler, seed=args.seed,
                          space=args.space,
                          train=search_training(epochs=args.brief_epochs), objectives=("accuracy", "latency"),
                          constraints=Constraints(max_latency_ms=top_ms), device=args.device,
                          concurrency=args.concurrency, keep_weights="front", **data_spec, **extra)


def _front(run_dir: Path) -> list[dict]:
    """The finished search's exact front (every accuracy difference counted, so the fast end is not tied away):
    arch, latency, brief accuracy, and the final validation accuracy of the members it retrained."""
    from cspnas.run_format import exact_front, load_run

    run = load_run(run_dir)
    out = []
    for _, r in exact_front(run.trials, run.config).iterrows():
        final = r.get("final_val_acc")
        final = None if final is None or (isinstance(final, float) and math.isnan(final)) else float(final)
        out.append({"trial": int(r["trial"]), "arch": json.loads(r["arch_json"]), "latency_ms": float(r["latency_ms"]),
                    "brief_acc": float(r["accuracy"]), "final_val_acc": final})
    return out


def _pick(front: list[dict], level_ms: float, final_first: bool = True) -> dict | None:
    """The member at or under the level with the best final (else brief) validation accuracy; with
    ``final_first=False`` the best brief accuracy, retrained or not (the BRIEF_BEST arm)."""
    under = [m for m in front if m["latency_ms"] <= level_ms]
    final = final_first and any(m["final_val_acc"] is not None for m in under)
    key = (lambda m: m["final_val_acc"]) if final else (lambda m: m["brief_acc"])
    under = [m for m in under if key(m) is not None]
    return max(under, key=key) if under else None


def _full_train(arch_dict: dict, data, args, seed: int) -> dict:
    import torch

    from cspnas.models import build_model
    from cspnas.train import TrainConfig, evaluate, train

    cfg = TrainConfig(epochs=args.full_epochs, seed=seed, device=args.device)
    torch.manual_seed(seed)
    model = build_model(arch_from_dict(arch_dict))
    t0 = time.perf_counter()
    result = train(model, data, cfg)
    test = evaluate(model, data.test_x, data.test_y, mean=data.mean, std=data.std, bf16=cfg.bf16)
    return {"val_acc": result.final_val_acc, "test_acc": test, "train_s": round(time.perf_counter() - t0, 1)}


def _stats(accs: dict[str, float]) -> tuple[float, float]:
    values = list(accs.values())
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# re-timed latencies within this share of a level count as at it: the search's own latency noise floor (2%)
LATENCY_NOISE = OBJECTIVES["latency"].noise_floor


def verdicts(models: dict[str, dict], picks: dict[str, str], levels: list[float]) -> list[dict]:
    """Per level: the best baseline at or under it (re-timed latency, within LATENCY_NOISE), each search's pick,
    and whether the goal is met."""
    out = []
    for i, level in enumerate(levels):
        limit = level * (1 + LATENCY_NOISE)
        base = [(name, m) for name, m in models.items() if m["kind"] == "baseline" and m["latency_ms"] <= limit]
        best = max(base, key=lambda nm: _stats(nm[1]["test_acc"])[0]) if base else None
        row: dict = {"level_ms": level, "best_baseline": best[0] if best else None}
        if best:
            row["baseline_mean"], row["baseline_std"] = _stats(best[1]["test_acc"])
            row["baseline_latency_ms"] = best[1]["latency_ms"]
        for method in (*METHODS, BRIEF_BEST):
            name = picks.get(f"{method}@{i}")
            if name is None or not models[name]["test_acc"]:
                continue
            mean, std = _stats(models[name]["test_acc"])
            row[f"{method}_pick"], row[f"{method}_mean"], row[f"{method}_std"] = name, mean, std
            row[f"{method}_latency_ms"] = models[name]["latency_ms"]
            row[f"{method}_within_level"] = models[name]["latency_ms"] <= limit  # picked by the search's timing
        if best and "cspnas_mean" in row:
            spread = max(row["baseline_std"], row["cspnas_std"])
            gain = row["cspnas_mean"] - row["baseline_mean"]
            row["gain_points"] = 100 * gain
            row["beats_baseline"] = gain >= 0.01 and gain > 2 * spread
            row["matches_faster"] = (gain >= -spread and row["cspnas_latency_ms"] <= 0.7 * row["baseline_latency_ms"])
            row["beats_random"] = "random_mean" in row and row["cspnas_mean"] > row["random_mean"]
            row["goal_met"] = (row["beats_baseline"] or row["matches_faster"]) and row["beats_random"]
        out.append(row)
    return out


def plot(path: Path, models: dict[str, dict], levels: list[float] = ()) -> None:
    """Test accuracy vs latency: each family a curve (seed means), each search's picks points with +- seed std
    bars; the latency levels as dashed verticals."""
    from svg import chart

    series: dict[str, list[tuple[float, ...]]] = {}
    for name, m in sorted(models.items(), key=lambda nm: nm[1]["latency_ms"]):
        if not m["test_acc"]:
            continue
        label = m["family"] if m["kind"] == "baseline" else f"{m['kind']} picks"
        mean, std = _stats(m["test_acc"])
        series.setdefault(label, []).append((m["latency_ms"], 100 * mean, 100 * std))
    if series:
        chart(path, series, title="Test accuracy vs latency after full training", xlabel="latency (ms)",
              ylabel="test accuracy (%)", points=frozenset(f"{k} picks" for k in (*METHODS, BRIEF_BEST)),
              vlines=tuple(levels))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40, help="architectures trained by each search")
    ap.add_argument("--brief-epochs", type=int, default=3)
    ap.add_argument("--finalists", type=int, default=4)
    ap.add_argument("--final-epochs", type=int, default=15)
    ap.add_argument("--full-epochs", type=int, default=15, help="the full recipe every compared model gets")
    ap.add_argument("--seeds", type=int, default=3)
    # the default space starts at the families' middle (stem 16, stages 32/64/128): its fastest candidates are
    # slower than the lowest level, so the searches use the same knobs over the families' width range
    ap.add_argument("--space", default="families", help="the searches' space (default: search_spaces/families.yaml)")
    # 2,000 images, as the other CPU experiments: the 20 baselines average 16M MACs at 16x16, ~3.3 s per epoch of
    # 2,000 images on 2 cores, so (20 + up to 6 picks) x 3 seeds x 15 epochs is ~65-75 min and the two searches
    # ~25 min: inside the 2 hours (4,000 images would need ~2.75 h)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full-data", action="store_true", help="the whole CIFAR-10 at 32x32 (for a GPU)")
    ap.add_argument("--seed", type=int, default=0, help="the searches' seed and the data split")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="digits, budget 3, 1 epoch, 1 seed, the two smallest members of each family")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "headline.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.budget, args.brief_epochs, args.finalists, args.final_epochs = 3, 1, 1, 1
        args.full_epochs, args.seeds, args.train_subset = 1, 1, None
        data_spec = {"dataset": "digits", "data_dir": None, "train_subset": None}
        note = "digits (bundled), smoke"
    elif args.full_data:
        data_spec = {"dataset": "folder", "data_dir": str(cifar10_jpeg()), "train_subset": args.train_subset}
        note = "CIFAR-10, 32x32 JPEG, full"
    else:
        folder = small_cifar10()
        data_spec = {"dataset": "folder", "data_dir": str(folder), "train_subset": args.train_subset}
        note = f"CIFAR-10 reduced: {folder.name} (16x16 PNG), see experiments/common.py"
    args.work = (args.out.parent / (args.out.stem + "_runs")) if args.smoke else CACHE / f"headline-{args.out.stem}"
    data = load_dataset(data_spec["dataset"], data_spec["data_dir"], val_fraction=0.1, split_seed=args.seed,
                        train_subset=data_spec["train_subset"])
    probe = SearchSettings(name="probe", device=args.device, **data_spec)
    latency = latency_settings(probe, data.in_chs, data.input_size)
    settings = {k: getattr(args, k) for k in ("budget", "brief_epochs", "finalists", "final_epochs", "full_epochs",
                                              "seeds", "train_subset", "device", "seed", "full_data", "space")}
    settings.update(data=note, data_summary=data.summary(), latency=latency.to_dict())
    settings = json.loads(json.dumps(settings))

    state: dict = {"experiment": "headline", "complete": False, "settings": settings, "models": {}, "levels": None,
                   "runs": {}, "picks": {}, "timing": {}}
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("settings") == settings:
            state = previous
    models, t0, before = state["models"], time.perf_counter(), state.get("wall_s", 0.0)

    def save() -> None:  # wall_s: this run's seconds so far plus those of the runs it resumes
        state["wall_s"] = round(before + time.perf_counter() - t0, 1)
        write_json(args.out, state)

    # 1-2. baselines, costed as the search costs a candidate; three levels spanning them
    meter = CostMeter(latency=latency, gate=None, input_size=data.input_size)
    archs = members(input_size=data.input_size, num_classes=data.num_classes, in_chs=data.in_chs)
    if args.smoke:
        archs = {k: v for k, v in archs.items() if k.endswith(("-xs", "-s"))}
    for name, arch in archs.items():
        if name not in models:
            cost = meter.measure(arch)
            models[name] = {"kind": "baseline", "family": name.rsplit("-", 1)[0], "arch": arch.to_dict(),
                            "params": cost["params"], "macs": cost["macs"], "search_latency_ms": cost["latency_ms"],
                            "latency_ms": cost["latency_ms"], "test_acc": {}, "val_acc": {}}
    if state["levels"] is None:
        lat = sorted(m["search_latency_ms"] for m in models.values() if m["kind"] == "baseline")
        lo, hi = lat[1], lat[-1]  # the top level is the searches' limit: each search has a pick there
        state["levels"] = [lo * (hi / lo) ** (k / 2) for k in range(3)]
    save()
    levels = state["levels"]
    # the searches' limit: the slowest baseline, so their fronts cover every level with room to spare
    top = max(m["search_latency_ms"] for m in models.values() if m["kind"] == "baseline")

    # 3-4. the two searches, then their picks per level
    for method, sampler in METHODS.items():
        run_dir = args.work / method
        if method not in state["runs"]:
            s = time.perf_counter()
            if run_dir.exists():  # interrupted: the search resumes itself
                run_search(resume=run_dir, live=False, dashboard=False)
            else:
                args.work.mkdir(parents=True, exist_ok=True)
                run_search(_search_settings(args, method, sampler, data_spec, top), live=False, dashboard=False)
            state["runs"][method] = {"run_dir": str(run_dir), "search_s": round(time.perf_counter() - s, 1),
                                     "front": _front(run_dir)}
            save()
        front = state["runs"][method]["front"]
        for i, level in enumerate(levels):
            arms = {method: _pick(front, level)}
            if method == "cspnas":
                arms[BRIEF_BEST] = _pick(front, level, final_first=False)
            for arm, pick in arms.items():
                if pick is None:
                    continue
                name = f"{method}-trial{pick['trial']}"
                state["picks"][f"{arm}@{i}"] = name
                # a model shared with an earlier arm keeps that arm's kind
                models.setdefault(name, {"kind": arm, "family": arm, "arch": pick["arch"],
                                         "search_latency_ms": pick["latency_ms"], "latency_ms": pick["latency_ms"],
                                         "brief_acc": pick["brief_acc"], "final_val_acc": pick["final_val_acc"],
                                         "test_acc": {}, "val_acc": {}})
    save()
    import ray

    ray.shutdown()  # the rest trains in this process: no cluster to keep alive (or to lose) for an hour

    # 5. full training, seeds outermost so a partial run already has one seed of everything
    for seed in range(args.seeds):
        for name, m in models.items():
            if str(seed) in m["test_acc"]:
                continue
            r = _full_train(m["arch"], data, args, seed)
            m["test_acc"][str(seed)], m["val_acc"][str(seed)] = r["test_acc"], r["val_acc"]
            m.setdefault("train_s", {})[str(seed)] = r["train_s"]
            print(f"seed {seed} {name:18s} {m['latency_ms']:.3f} ms  test {r['test_acc']:.3f} ({r['train_s']:.0f} s)",
                  flush=True)
            save()

    # 6. one interleaved re-timing pass of everything compared
    if not state["timing"]:
        names = list(models)
        timed = meter.confirm([json.dumps(models[n]["arch"]) for n in names], PASSES)
        for n, t in zip(names, timed):
            models[n]["latency_ms"] = t["latency_confirmed_ms"]
            models[n]["latency_iqr_ms"] = t.get("latency_confirmed_iqr_ms")
        state["timing"] = {"passes": PASSES, "models": len(names)}

    state["verdicts"] = verdicts(models, state["picks"], levels)
    state.update(complete=True, machine=machine())
    save()
    plot(args.out.with_suffix(".svg"), models, levels)
    print(table(state))
    return state


def table(state: dict) -> str:
    """The verdicts as a Markdown table (README): per level, the best baseline and each search's pick."""
    def cell(v: dict, who: str) -> str:
        if f"{who}_mean" not in v:
            return "no pick"
        name = v.get(f"{who}_pick") or v.get("best_baseline")
        return (f"{name}: {100 * v[f'{who}_mean']:.1f} ± {100 * v[f'{who}_std']:.1f} % "
                f"@ {v[f'{who}_latency_ms']:.3f} ms")

    lines = ["| level | best baseline at or under it | cspnas pick | random pick | cspnas - baseline | goal |",
             "|---|---|---|---|---|---|"]
    for v in state["verdicts"]:
        gain = f"{v['gain_points']:+.1f} points" if "gain_points" in v else "-"
        goal = "met" if v.get("goal_met") else "**not met**"
        lines.append(f"| {v['level_ms']:.3f} ms | {cell(v, 'baseline')} | {cell(v, 'cspnas')} | {cell(v, 'random')} "
                     f"| {gain} | {goal} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
