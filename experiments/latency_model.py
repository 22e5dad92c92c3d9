"""Latency models (issue 13): how well does a profiled per-op cost model predict this machine's latency?

Profiles ``--n`` architectures of the default space (its corners plus balanced draws) and a held-out
set of ``--held-out`` more (balanced draws only, another seed) at ``--input-size`` with the search's
latency settings (cpu, batch 1, 1 thread, float32), each in ``--repeats`` passes keeping its fastest
median, exactly as ``cspnas latency profile`` does; fits the model as ``cspnas latency fit`` does and
reports, on the held-out set:

* the share of predictions within +-10%, Spearman, median bias, 90th percentile |error|;
* the noise ceiling: how often two passes over the same architecture agree within 10% (no
  predictor can agree with a measurement more often than the measurement agrees with itself);
* a learning curve: held-out accuracy after fitting on the first k profiled architectures;
* screening throughput: Optuna ask (random sampler, in memory) + sample + predict + constraint check,
  candidates per second on one core;
* what a 200-trained search under a tight target costs: candidates screened (sampled + predicted +
  checked) until 200 are within a target that only ~10% of the space meets, and the seconds that takes.

With every backend registered in cspnas (onnxruntime, where present) the profile and fit are
repeated per backend.

    flock /tmp/cspnas-bench.lock python experiments/latency_model.py   # results/benchmarks/latency_model.json
    python experiments/latency_model.py --smoke --out /tmp/lm.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cspnas.cost import LATENCY_BACKENDS, LatencySettings  # noqa: E402
from cspnas.latency_model.fitting import fit_profile  # noqa: E402
from cspnas.latency_model.model import accuracy, fit_model  # noqa: E402
from cspnas.latency_model.profile import profile_device  # noqa: E402
from cspnas.search.settings import Constraints  # noqa: E402
from cspnas.space.searchspace import load_space  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "latency_model.json"


def pass_agreement(profile) -> float | None:
    """Share of architectures whose first two passes agree within 10%."""
    pairs = [m["passes_ms"][:2] for m in profile.measurements if len(m["passes_ms"]) >= 2]
    return float(np.mean([abs(b / a - 1) <= 0.10 for a, b in pairs])) if pairs else None


def learning_curve(profile, held, valid_for, sizes) -> list[dict]:
    archs, y = profile.archs(), profile.latencies_ms()
    h_archs, h_y = held.archs(), held.latencies_ms()
    curve = []
    for k in sizes:
        if k > len(archs):
            break
        model = fit_model(archs[:k], y[:k], valid_for, {})
        curve.append({"archs": k, **accuracy(model.predict_many(h_archs), h_y)})
    return curve


class _RandomTrial:
    """Uniform draws without Optuna's bookkeeping: the space's own sampling, predicted and checked."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def suggest_int(self, name, low, high):
        return int(self.rng.integers(low, high + 1))

    def suggest_categorical(self, name, choices):
        return choices[int(self.rng.integers(len(choices)))]


def screening(model, space, n: int, seed: int) -> dict:
    """Candidates/s of sample + predict + constraint check on one core: sampled by an Optuna study
    (random sampler, in memory: what a search's ask costs at least) and by plain uniform draws."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    limits, out = Constraints(max_latency_ms=1.0), {"candidates": n}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = np.random.default_rng(seed)
    for name, draw in (("optuna_random", study.ask), ("uniform", lambda: _RandomTrial(rng))):
        archs, t0 = [], time.perf_counter()
        for _ in range(n):
            arch = space.sample(draw(), in_chs=3, num_classes=10)
            limits.check({"latency_ms": model.predict_ms(arch)})
            archs.append(arch)
        out[f"{name}_per_s"] = n / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    for arch in archs:
        model.predict_ms(arch)
    out["predict_only_per_s"] = n / (time.perf_counter() - t1)
    return out


def tight_search(model, space, trained: int, seed: int) -> dict:
    """Screen random candidates until `trained` are within a target only ~10% of the space meets."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + 1))
    probe = [model.predict_ms(space.sample(study.ask(), in_chs=3, num_classes=10)) for _ in range(500)]
    target = float(np.quantile(probe, 0.10))
    limits, feasible, screened, t0 = Constraints(max_latency_ms=target), 0, 0, time.perf_counter()
    while feasible < trained:
        arch = space.sample(study.ask(), in_chs=3, num_classes=10)
        screened += 1
        feasible += not limits.check({"latency_ms": model.predict_ms(arch)})[1]
    return {"trained": trained, "target_ms": target, "screened": screened, "screen_seconds": time.perf_counter() - t0}


def run_backend(backend: str, args, folder: Path, space) -> dict:
    settings = LatencySettings(backend=backend, input_size=args.input_size, min_run_time_s=args.min_run_time)

    def show(line: str) -> None:
        print(f"\r[{backend}] {line}\x1b[K" if sys.stderr.isatty() else f"[{backend}] {line}", end="",
              file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    fit_path, held_path = folder / f"{backend}-fit.json", folder / f"{backend}-held.json"
    profile = profile_device(space, settings, args.n, fit_path, repeats=args.repeats, progress=show)
    held = profile_device(space, settings, args.held_out, held_path, seed=1, repeats=args.repeats,
                          corners=False, progress=show)
    profile_s = time.perf_counter() - t0
    print(file=sys.stderr)
    # the first --n of the profile (a file continued to a larger --n holds more: the learning curve's runs)
    profile.measurements = profile.measurements[:args.n]
    model, _ = fit_profile(profile)
    if args.save_model:
        model.save(Path(args.save_model).with_suffix(f".{backend}.json"))
    result = accuracy(model.predict_many(held.archs()), held.latencies_ms())
    sizes = [k for k in (30, 40, 60, 80, 100, 150, 200, 250, 300, 400, 500) if k <= args.n]
    curve = learning_curve(profile, held, model.valid_for, sizes)
    reach = next((c["archs"] for c in curve if c["within_10pct"] >= 0.90), None)
    # the same fit without its correction: what the sum of per-op costs alone gets (its costs are the same)
    sum_only = accuracy(replace(model, correction=None).predict_many(held.archs()), held.latencies_ms())
    return {"held_out": result, "held_out_sum_only": sum_only, "in_sample": model.fit["in_sample"],
            "cross_validated": model.fit.get("cross_validated"), "corrected": model.correction is not None,
            "noise_ceiling_pass_agreement": {"fit": pass_agreement(profile), "held_out": pass_agreement(held)},
            "learning_curve": curve, "archs_for_90pct": reach,
            "screening": screening(model, space, args.screen, seed=0),
            "tight_search": tight_search(model, space, args.trained, seed=0),
            "profile_seconds": profile_s, "latency_ms_range": [float(min(profile.latencies_ms())),
                                                               float(max(profile.latencies_ms()))],
            "coefficients": dict(zip(model.features, model.coef))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--screen", type=int, default=5000)
    ap.add_argument("--trained", type=int, default=200)
    ap.add_argument("--profiles", default=None, help="keep the profile files here (re-running continues them)")
    ap.add_argument("--save-model", default=None, help="also write the fitted model(s) to this path (.BACKEND.json)")
    ap.add_argument("--smoke", action="store_true", help="tiny and quick: 32 + 8 archs at 8x8")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.smoke:
        args.n, args.held_out, args.repeats, args.input_size, args.min_run_time = 32, 8, 2, 8, 0.005
        args.screen, args.trained = 200, 20
    space = load_space("default")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.profiles or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        backends = {name: run_backend(name, args, folder, space) for name in sorted(LATENCY_BACKENDS)}
    import torch

    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "profiles", "save_model")},
              "space": "default", "backends": backends,
              "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                          "load_before": load_before, "load_after": os.getloadavg()}}
    Path(args.out).write_text(json.dumps(report, indent=2))
    for name, r in backends.items():
        h = r["held_out"]
        print(f"{name}: held-out {h['n']}: {h['within_10pct']:.1%} within +-10%, Spearman {h['spearman']:.3f}, "
              f"bias {h['median_bias']:+.1%}; pass agreement {r['noise_ceiling_pass_agreement']['held_out']}; "
              f"90% reached with {r['archs_for_90pct']} archs; screening {r['screening']['uniform_per_s']:.0f}/s "
              f"({r['screening']['optuna_random_per_s']:.0f}/s through Optuna); "
              f"{r['tight_search']['trained']} under {r['tight_search']['target_ms']:.2f} ms: "
              f"{r['tight_search']['screened']} screened in {r['tight_search']['screen_seconds']:.1f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
