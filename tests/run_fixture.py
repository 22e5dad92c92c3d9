"""Test helper: write a real run directory in the `cspnas search` format without a search.

Architectures, models, params, MACs, latencies, weights and the Optuna study are real;
only the accuracies are synthetic (no training happens in a fixture). The knobs vary the
stage type, split ratio and depth of a two-stage net on 8x8 one-channel images (digits).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

import optuna
import pandas as pd
import torch
import yaml
from safetensors.torch import save_file

from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency
from cspnas.models import build_model
from cspnas.results.pareto import compute_front, default_objectives, hypervolume_curve
from cspnas.space import ArchConfig, StageConfig, StemConfig

STAGE_TYPES = ("csp", "fusion_first", "fusion_last", "plain")
ACTS = ("relu", "silu", "leaky_relu")
DISTRIBUTIONS = {
    "act": optuna.distributions.CategoricalDistribution(ACTS),
    **{f"s{i}.{k}": d for i in range(2) for k, d in (
        ("stage_type", optuna.distributions.CategoricalDistribution(STAGE_TYPES)),
        ("split_ratio", optuna.distributions.FloatDistribution(0.25, 0.75)),
        ("depth", optuna.distributions.IntDistribution(1, 3)),
    )},
}
IN_CHS, NUM_CLASSES, INPUT_SIZE = 1, 10, 8


def sample_params(rng: random.Random) -> dict:
    """One point of the fixture's search space; split_ratio only exists for split stages."""
    params: dict = {"act": rng.choice(ACTS)}
    for i in range(2):
        stage_type = rng.choice(STAGE_TYPES)
        params[f"s{i}.stage_type"] = stage_type
        if stage_type != "plain":
            params[f"s{i}.split_ratio"] = round(rng.uniform(0.25, 0.75), 3)
        params[f"s{i}.depth"] = rng.randint(1, 3)
    return params


def arch_from_params(params: dict) -> ArchConfig:
    widths = (16, 32)
    stages = tuple(
        StageConfig(depth=params[f"s{i}.depth"], out_chs=widths[i], stride=2,
                    stage_type=params[f"s{i}.stage_type"], block_type="dark",
                    split_ratio=params.get(f"s{i}.split_ratio", 0.5), act=params["act"])
        for i in range(2)
    )
    return ArchConfig(stem=StemConfig(out_chs=(8,), act=params["act"]), stages=stages,
                      in_chs=IN_CHS, num_classes=NUM_CLASSES)


def default_state(i: int) -> str:
    """A spread of non-complete states at fixed trial numbers (n=12: 3, 10 pruned; 5 failed)."""
    if i % 7 == 3:
        return "pruned"
    if i % 11 == 5:
        return "failed"
    return "complete"


def make_run(tmp_path: Path, n: int = 12, *, name: str = "fixture", seed: int = 0,
             max_macs: float | None = None, target_latency_ms: float | None = None,
             target_latency_quantile: float | None = None,
             states: dict[int, str] | None = None, keep_weights: bool = True,
             with_pareto: bool = True, epochs: int = 3) -> Path:
    """Write `tmp_path/name/` like a finished search and return its path.

    max_macs: None -> the 75th percentile of the sampled MACs, so some trials are infeasible.
    target_latency_quantile: set target_latency_ms to this quantile of the measured latencies.
    states: overrides of the default state per trial number (e.g. {0: "running"}).
    keep_weights: keep weights for front members, as the search does.
    """
    rng = random.Random(seed)
    run = Path(tmp_path) / name
    (run / "weights").mkdir(parents=True)
    settings = LatencySettings(in_chs=IN_CHS, input_size=INPUT_SIZE, min_run_time_s=0.01, warmup=1)
    base = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

    rows, models = [], {}
    for i in range(n):
        params = sample_params(rng)
        arch = arch_from_params(params)
        model = build_model(arch)
        latency = measure_latency(model, settings)
        macs = count_macs(model, in_chs=IN_CHS, input_size=INPUT_SIZE).total
        models[i] = model
        rows.append({"trial": i, "params_dict": params, "arch": arch, "params": count_params(model), "macs": macs,
                     "latency_ms": latency.median_ms, "latency_iqr_ms": latency.iqr_ms})

    if target_latency_quantile is not None:
        target_latency_ms = float(pd.Series([r["latency_ms"] for r in rows]).quantile(target_latency_quantile))
    if max_macs is None:
        max_macs = float(pd.Series([r["macs"] for r in rows]).quantile(0.75))
    macs_ref = float(max_macs)
    latency_ref_ms = target_latency_ms or 2.0 * max(r["latency_ms"] for r in rows)

    table = []
    for r in rows:
        i = r["trial"]
        state = (states or {}).get(i, default_state(i))
        violations = []
        if r["macs"] > max_macs:
            violations.append(f"macs {r['macs'] / 1e6:.2f}M > {max_macs / 1e6:.2f}M")
        if target_latency_ms is not None and r["latency_ms"] > target_latency_ms:
            violations.append(f"latency {r['latency_ms']:.3g}ms > {target_latency_ms:g}ms")
        if violations and state == "complete":
            state = "infeasible"
        # synthetic accuracy: more compute helps, split stages a little more, plus noise
        split_bonus = sum(0.01 for k, v in r["params_dict"].items() if k.endswith("stage_type") and v != "plain")
        acc = min(0.99, 0.55 + 0.08 * math.log10(r["macs"] / 1e4) + split_bonus + rng.uniform(-0.03, 0.03))
        done = {"complete": epochs, "pruned": 1, "failed": 0, "infeasible": 0, "running": 1, "interrupted": 1}[state]
        curve = [round(acc * (k + 1) / epochs, 4) for k in range(done)]
        started = base + dt.timedelta(seconds=10 * i)
        train_s = 4.0 * done
        finished = state not in ("running",)
        table.append({
            "trial": i, "state": state, "fidelity": done / epochs, "epochs_done": done, "epochs": epochs,
            "arch_hash": r["arch"].arch_hash(), "arch_summary": r["arch"].summary(),
            "arch_json": json.dumps(r["arch"].to_dict(), separators=(",", ":")),
            "params": r["params"], "macs": r["macs"], "latency_ms": r["latency_ms"],
            "latency_iqr_ms": r["latency_iqr_ms"], "feasible": not violations, "violations": "; ".join(violations),
            "val_acc_per_epoch": json.dumps(curve), "accuracy": round(acc, 4) if state == "complete" else None,
            "train_seconds": train_s, "cost_seconds": 0.3, "started_at": started.isoformat(),
            "completed_at": (started + dt.timedelta(seconds=train_s + 0.3)).isoformat() if finished else None,
            "failure_reason": "RuntimeError: synthetic failure" if state == "failed" else None,
            "duplicate_of": None, "weights": None, "hypervolume": None,
            **{f"p.{k}": v for k, v in r["params_dict"].items()},
        })
    df = pd.DataFrame(table)
    # p. columns in a stable order, after the fixed ones
    knobs = [f"p.{k}" for k in DISTRIBUTIONS]
    df = df[[c for c in df.columns if not c.startswith("p.")] + knobs]

    objectives = default_objectives(macs_ref=macs_ref, latency_ref_ms=latency_ref_ms)
    good = df[(df["state"] == "complete") & df["feasible"]]
    front = compute_front(good, objectives)
    if len(good):
        df.loc[good.index, "hypervolume"] = hypervolume_curve(good, objectives, "trial")
    for label in front.table.index:
        i = int(df.loc[label, "trial"])
        _pretend_trained(models[i], seed + i)
        if keep_weights:
            rel = f"weights/trial-{i}.safetensors"
            save_file({k: v.contiguous() for k, v in models[i].state_dict().items()}, str(run / rel))
            df.loc[label, "weights"] = rel
    df.to_csv(run / "trials.csv", index=False)

    if with_pareto:
        pareto = front.table.assign(weights=df.loc[front.table.index, "weights"])
        pareto[["trial", "arch_hash", "arch_summary", "accuracy", "macs", "params", "latency_ms", "latency_iqr_ms",
                "knee", "weights"]].to_csv(run / "pareto.csv", index=False)

    config = {
        "name": name, "dataset": "digits", "epochs": epochs, "budget": n, "sampler": "tpe", "seed": seed,
        "macs_ref": macs_ref, "latency_ref_ms": latency_ref_ms, "target_latency_ms": target_latency_ms,
        "max_macs": max_macs, "max_params": None, "latency": settings.to_dict(),
        "num_classes": NUM_CLASSES, "in_chs": IN_CHS, "input_size": INPUT_SIZE,
        "created_at": base.isoformat(), "cspnas_version": "0.1.0",
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _write_study(run / "study.db", name, df)
    return run


def _pretend_trained(model, seed: int) -> None:
    """Move weights and BN statistics off their init, so exported outputs are O(1), as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def _write_study(path: Path, name: str, df: pd.DataFrame) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name=name,
                                directions=["maximize", "minimize", "minimize"])
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
              "running": optuna.trial.TrialState.RUNNING}
    for _, row in df.iterrows():
        params = {c[2:]: _plain(row[c]) for c in df.columns if c.startswith("p.") and not pd.isna(row[c])}
        state = states.get(row["state"], optuna.trial.TrialState.FAIL)  # infeasible/failed/interrupted
        complete = row["state"] == "complete"
        values = [float(row["accuracy"]), float(row["macs"]), float(row["latency_ms"])] if complete else None
        trial = optuna.trial.create_trial(
            params=params, distributions={k: DISTRIBUTIONS[k] for k in params}, values=values, state=state,
            user_attrs={"cspnas_state": row["state"]},
        )
        study.add_trial(trial)


def _plain(value):
    """numpy scalars -> Python scalars, as Optuna's distributions expect."""
    return value.item() if hasattr(value, "item") else value
