"""Test helper: write a real run directory in the `cspnas search` format without a search.

Architectures, models, params, MACs, latencies, weights and the Optuna study are real;
only the accuracies are synthetic (no training happens in a fixture). The knobs vary the
stage type, split ratio and depth of a two-stage net on 8x8 one-channel images (digits).
"""
from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path

import optuna
import pandas as pd
import torch
from safetensors.torch import save_file

from cspnas import run_format
from cspnas.cost import LatencySettings
from cspnas.models import build_model
from cspnas.objectives import DEFAULT_OBJECTIVES, references, told_values
from cspnas.search.costs import CostMeter
from cspnas.search.settings import Constraints, SearchSettings, search_training
from cspnas.space import ArchConfig, StageConfig, StemConfig

# a small search space (2 stages, narrow): fast candidates for tests about rules, not costs
TINY_SPACE_YAML = """\
name: tiny
stem: {out_chs: [8, 16], kernel_size: 3, stride: 1}
stages:
  - {depth: {min: 1, max: 2}, out_chs: [16, 24], stride: 2}
  - {depth: 1, out_chs: [32, 48], stride: 2}
per_stage:
  stage_type: [csp, plain]
  block_type: dark
  split_ratio: [0.25, 0.5]
network:
  act: [relu, silu]
"""

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
STATES = {"complete": optuna.trial.TrialState.COMPLETE, "infeasible": optuna.trial.TrialState.COMPLETE,
          "pruned": optuna.trial.TrialState.PRUNED, "running": optuna.trial.TrialState.RUNNING}


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
             with_pareto: bool = True, epochs: int = 3,
             objectives: tuple[str, ...] = DEFAULT_OBJECTIVES, accuracy_noise: float = 0.0) -> Path:
    """Write `tmp_path/name/` like a finished search and return its path.

    max_macs: None -> the 75th percentile of the sampled MACs, so some trials are infeasible.
    target_latency_quantile: set target_latency_ms to this quantile of the measured latencies.
    states: overrides of the default state per trial number (e.g. {0: "running"}).
    keep_weights: keep weights for front members, as the search does.
    objectives: the run's objectives (cspnas.objectives), as `cspnas search --objectives` records them.
    """
    rng = random.Random(seed)
    run = Path(tmp_path) / name
    latency = LatencySettings(in_chs=IN_CHS, input_size=INPUT_SIZE, min_run_time_s=0.01, warmup=1)
    base = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

    meter = CostMeter(latency, None, INPUT_SIZE)  # the search's own cost measurement
    rows = []
    for i in range(n):
        params = sample_params(rng)
        arch = arch_from_params(params)
        rows.append({"trial": i, "params_dict": params, "arch": arch, **meter.measure(arch)})

    if target_latency_quantile is not None:
        target_latency_ms = float(pd.Series([r["latency_ms"] for r in rows]).quantile(target_latency_quantile))
    if max_macs is None:
        max_macs = float(pd.Series([r["macs"] for r in rows]).quantile(0.75))
    limits = Constraints(max_macs=int(max_macs), max_latency_ms=target_latency_ms)
    largest = {c: max(r[c] for r in rows) for c in ("params", "macs", "latency_ms", "memory_bytes")}
    settings = SearchSettings(name=name, dataset="digits", train=search_training(epochs=epochs), budget=n,
                              sampler="tpe", seed=seed, constraints=limits, objectives=objectives,
                              accuracy_noise=accuracy_noise)  # 0: exact accuracy, the fronts tests expect
    config = run_format.new_config(
        settings=settings.to_dict(), space_yaml="", space_name="fixture", data={"name": "digits"},
        num_classes=NUM_CLASSES, in_chs=IN_CHS, input_size=INPUT_SIZE, train_device="cpu",
        latency=latency.to_dict(), references=references(objectives, limits.limits(), lambda: largest))
    config["created_at"] = base.isoformat()
    run_format.create_run_dir(run, config)
    study = run_format.open_study(run_format.open_storage(run / run_format.STUDY), settings.objectives)

    for r in rows:
        i = r["trial"]
        state = (states or {}).get(i, default_state(i))
        cost = {k: v for k, v in r.items() if k not in ("trial", "params_dict", "arch")}
        _, violations = limits.check(cost)
        if violations and state == "complete":
            state = "infeasible"
        # synthetic accuracy: more compute helps, split stages a little more, plus noise
        split_bonus = sum(0.01 for k, v in r["params_dict"].items() if k.endswith("stage_type") and v != "plain")
        acc = min(0.99, 0.55 + 0.08 * math.log10(r["macs"] / 1e4) + split_bonus + rng.uniform(-0.03, 0.03))
        done = {"complete": epochs, "pruned": 1, "failed": 0, "infeasible": 0, "running": 1, "interrupted": 1}[state]
        started = base + dt.timedelta(seconds=10 * i)
        train_s = 4.0 * done
        attrs = {"arch": r["arch"].to_json(indent=None), "arch_hash": r["arch"].arch_hash(),
                 "arch_summary": r["arch"].summary(), **cost,
                 "feasible": not violations, "violations": violations, "epochs": epochs, "epochs_done": done,
                 "val_acc_per_epoch": [round(acc * (k + 1) / epochs, 4) for k in range(done)],
                 "train_seconds": train_s, "cost_seconds": 0.3, "status": state,
                 "accuracy": round(acc, 4) if state == "complete" else 0.0}
        if state == "failed":
            attrs["failure_reason"] = "RuntimeError: synthetic failure"
        if state == "complete":
            attrs["weights"] = run_format.weights_path(i)  # the search then deletes all but the front's
        told = state in ("complete", "infeasible")
        study.add_trial(optuna.trial.FrozenTrial(
            number=i, trial_id=i, state=STATES.get(state, optuna.trial.TrialState.FAIL), value=None,
            values=told_values(settings.objectives, attrs) if told else None,
            datetime_start=started, datetime_complete=None if state == "running" else
            started + dt.timedelta(seconds=train_s + 0.3),
            params={k: _plain(v) for k, v in r["params_dict"].items()},
            distributions={k: DISTRIBUTIONS[k] for k in r["params_dict"]}, user_attrs=attrs,
            system_attrs={}, intermediate_values={}))

    # weights of the front members only, as a search keeps them
    front, _ = run_format.pareto_frame(run_format.trials_frame(study, config, run), config)
    (run / run_format.WEIGHTS).mkdir()
    for i in front["trial"]:
        if keep_weights:
            model = build_model(rows[i]["arch"])
            _pretend_trained(model, seed + i)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / run_format.weights_path(i)))
    trials = run_format.trials_frame(study, config, run)
    run_format.write_csv_atomic(trials, run / run_format.TRIALS)
    if with_pareto:
        run_format.write_csv_atomic(run_format.pareto_frame(trials, config)[0], run / run_format.PARETO)
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


def _plain(value):
    """numpy scalars -> Python scalars, as Optuna's distributions expect."""
    return value.item() if hasattr(value, "item") else value
