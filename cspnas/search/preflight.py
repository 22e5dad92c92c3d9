"""Pre-flight: refuse hard limits that nothing in the search space can meet, before any file exists."""
from __future__ import annotations

from dataclasses import replace


import optuna

from cspnas.errors import CspnasError
from cspnas.search.costs import CostMeter
from cspnas.search.settings import CPU_CONCURRENCY, SearchSettings
from cspnas.space import ArchConfig
from cspnas.space.searchspace import SearchSpace

PREFLIGHT_SAMPLES = 200  # random architectures looked at (plus the space's cheapest corners)
PREFLIGHT_LATENCY_CANDIDATES = 3  # latency is measured only for this many of the cheapest by MACs


def _conv_linear_macs(model, in_chs: int, input_size: int) -> int:
    """A cheap lower bound of fvcore's MAC count: convolutions and linear layers only (fvcore adds
    batch-norm and pooling). Shapes come from one forward pass, on the meta device for big inputs."""
    import torch
    from torch import nn

    total = 0

    def hook(m, _inputs, out) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    device = "cpu" if input_size <= 64 else "meta"
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.to(device).eval()(torch.zeros(1, in_chs, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def check_largest_fits(space: SearchSpace, settings: SearchSettings, meter: CostMeter, in_chs: int,
                       num_classes: int) -> None:
    """Refuse a space whose largest candidate (its most expensive corner, by the config-level estimate)
    cannot train `--concurrency` at a time on this machine's training device, or be timed on the latency
    device. On a cluster (--address) trials train elsewhere, so only the latency side is checked."""
    from cspnas.space.footprint import ensure_fits, footprint
    from cspnas.train import resolve_device

    size = meter.input_size
    corners = space.corners(in_chs, num_classes, cheapest=False)
    sizes = [footprint(a, size) for a in corners]
    fix = "use a smaller space (widths, depths) or input size"
    if not settings.address:
        # the search derives --concurrency before this; a direct caller's None means the CPU default
        concurrency = settings.concurrency or CPU_CONCURRENCY
        need = max(f.training_bytes(settings.train.batch_size) for f in sizes) * concurrency
        ensure_fits(need, str(resolve_device(settings.device)),
                    f"the largest candidate of space '{space.name}', {concurrency} training at once in "
                    f"batches of {settings.train.batch_size} at {size}x{size},", f"{fix}, --batch-size or --concurrency")
    lat = meter.latency
    ensure_fits(max(f.inference_bytes(lat.batch_size) for f in sizes), lat.device,
                f"timing the largest candidate of space '{space.name}' at batch {lat.batch_size}",
                f"{fix}, or --latency-batch-size")


def check_constraints_reachable(space: SearchSpace, settings: SearchSettings, meter: CostMeter, in_chs: int,
                                 num_classes: int) -> None:
    """Raise CspnasError, before the run directory exists, when the hard limits rule out the space
    or its largest candidate cannot fit in memory (check_largest_fits).

    Looks at one cheapest corner per stage/block type and PREFLIGHT_SAMPLES random architectures
    (Optuna's RandomSampler on an in-memory study, seeded by --seed): params, and MACs as a
    conv+linear lower bound confirmed with the exact fvcore count where it passes. With a latency
    limit it measures the first candidate within the other limits, then the
    PREFLIGHT_LATENCY_CANDIDATES cheapest by MACs. Returns as soon as one candidate meets every
    limit; writes nothing (latency is measured by the search's measurer, ungated: the gate's locks live in
    the run directory). A space whose only feasible corners are missed by the sample is refused
    wrongly; `run_search(preflight=False)` skips the check.
    """
    from cspnas.cost import count_macs, count_params
    from cspnas.models import build_model
    from cspnas.units import format_count, format_duration_ms

    check_largest_fits(space, settings, meter, in_chs, num_classes)
    c = settings.constraints
    if c.max_params is None and c.max_macs is None and c.max_latency_ms is None:
        return
    size = meter.input_size
    meter = replace(meter, gate=None)  # before any trainer runs: nothing to pause, no lock file written
    latencies: dict[str, float] = {}

    def latency_of(arch: ArchConfig) -> float:
        key = arch.arch_hash()
        if key not in latencies:
            latencies[key] = (meter.predictor.predict_ms(arch) if meter.predictor is not None  # --latency-model
                              else meter.time(arch)["latency_ms"])  # where the search measures (its measurer)
        return latencies[key]

    def exact_macs(arch: ArchConfig) -> int:
        return count_macs(build_model(arch), in_chs=in_chs, input_size=size).total

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=settings.seed))
    candidates = space.corners(in_chs, num_classes)
    seen: dict[str, tuple[int, int, ArchConfig]] = {}  # hash -> (params, MACs or their lower bound, arch)
    within: list[tuple[int, ArchConfig]] = []  # (MACs, arch) meeting the params and MACs limits
    samples = 0
    while candidates or samples < PREFLIGHT_SAMPLES:
        if candidates:
            arch = candidates.pop(0)
        else:
            samples += 1
            arch = space.sample(study.ask(), in_chs=in_chs, num_classes=num_classes)
        key = arch.arch_hash()
        if key in seen:
            continue
        model = build_model(arch)
        params = count_params(model)
        need_macs = c.max_macs is not None or c.max_latency_ms is not None
        macs = _conv_linear_macs(model, in_chs, size) if need_macs else 0
        ok = c.max_params is None or params <= c.max_params
        if ok and c.max_macs is not None and macs <= c.max_macs:
            macs = exact_macs(arch)  # the lower bound passes: check the count the search uses
        ok = ok and (c.max_macs is None or macs <= c.max_macs)
        seen[key] = (params, macs, arch)
        if ok:
            within.append((macs, arch))
            if c.max_latency_ms is None or (len(within) == 1 and latency_of(arch) <= c.max_latency_ms):
                return

    ms = c.max_latency_ms
    latency_limit = (None if ms is None else f"{ms:.3g} ms" if ms >= 1 else f"{ms * 1e3:.3g} us" if ms >= 1e-3
                     else f"{ms * 1e6:.3g} ns")
    limits = [f"--max-params {format_count(c.max_params)}" if c.max_params is not None else "",
              f"--max-macs {format_count(c.max_macs)}" if c.max_macs is not None else "",
              f"--target-latency {latency_limit}" if latency_limit is not None else ""]
    meets = " and ".join(x for x in limits if x)
    looked = f"{len(seen)} sampled architectures"
    if within:  # params/MACs can be met, latency can't: measure the cheapest few
        cheapest = [a for _, a in sorted(within, key=lambda t: t[0])[:PREFLIGHT_LATENCY_CANDIDATES]]
        fastest = min(latency_of(a) for a in cheapest)
        if fastest <= c.max_latency_ms:
            return
        found = (f"the fastest of the {len(cheapest)} with the fewest MACs among {looked} takes "
                 f"{format_duration_ms(fastest)}")
    else:
        parts = []
        if c.max_params is not None:
            parts.append(f"{format_count(min(p for p, _, _ in seen.values()))} params")
        if c.max_macs is not None or c.max_latency_ms is not None:
            arch = min(seen.values(), key=lambda t: t[1])[2]
            parts.append(f"{format_count(exact_macs(arch))} MACs")
        if c.max_latency_ms is not None:
            parts.append(f"{format_duration_ms(latency_of(arch))} for the one with the fewest MACs")
        found = f"fewest among {looked}: {', '.join(parts)}"
    raise CspnasError(f"no architecture in space '{space.name}' meets {meets} ({found}); "
                      "raise the limit or use a smaller space")
