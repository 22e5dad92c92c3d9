"""`cspnas latency fit` and `check`: a model from a profile (plus the measured latencies of past runs
on the same device), and its accuracy on a profile it was not fitted on."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cspnas.errors import CspnasError
from cspnas.latency_model.model import LatencyModel, accuracy, fit_model, load_model, model_scope
from cspnas.latency_model.profile import Profile, compare_fingerprints, read_profile, space_id
from cspnas.space import ArchConfig
from cspnas.space.arch import arch_from_dict, parse_json


def _complete(profile: Profile) -> Profile:
    if not profile.complete:
        h = profile.header
        raise CspnasError(f"{profile.path} is incomplete ({len(profile.measurements)} of {h['n']} architectures, "
                          f"{h['repeats']} passes); finish it by re-running `cspnas latency profile` with the same "
                          "arguments")
    return profile


def run_measurements(run_dir: str | Path, profile: Profile) -> tuple[list[ArchConfig], list[float], list[str]]:
    """The measured (never predicted) latencies of a search run made with the profile's space, input
    size and latency settings on the profile's device; refused in one line otherwise. Returns
    (archs, latencies, warnings)."""
    from cspnas.run_format import load_run
    from cspnas.space.searchspace import parse_space

    run = load_run(run_dir)
    config, warnings = run.config, []
    what = f"run {run_dir}"
    space = space_id(parse_space(config.get("space_yaml", ""), origin=f"{run_dir}/config.yaml:space_yaml"))
    if space != profile.header["space"]:
        raise CspnasError(f"{what} searched space {space}, the profile is of {profile.header['space']}; "
                          "pass runs of the profiled space only")
    latency = config.get("latency") or {}
    for key, want in model_scope(profile.latency).items():
        if key != "in_chs" and latency.get(key) != want:
            raise CspnasError(f"{what} measured latency with {key} {latency.get(key)!r}, the profile with {want!r}; "
                              "pass runs measured like the profile only")
    if "fingerprint" in config:
        warnings += compare_fingerprints(profile.header["fingerprint"], config["fingerprint"], what)
    else:
        warnings.append(f"{what} records no device fingerprint; its latencies are taken as this device's")
    t = run.trials
    if "latency_source" in t.columns:
        t = t[t["latency_source"].fillna("measured") == "measured"]
    t = t[t["latency_ms"].notna() & t["arch_json"].notna()].drop_duplicates("arch_hash")
    archs = [arch_from_dict(parse_json(text, f"{run_dir} trials.csv")) for text in t["arch_json"]]
    return archs, [float(v) for v in t["latency_ms"]], warnings


def fit_from(profile_path: str | Path, runs: Sequence[str | Path] = ()) -> tuple[LatencyModel, list[str]]:
    """Fit a model on a complete profile and the measured latencies of `runs`; returns it and warnings."""
    return fit_profile(_complete(read_profile(profile_path)), runs)


def fit_profile(profile: Profile, runs: Sequence[str | Path] = ()) -> tuple[LatencyModel, list[str]]:
    """`fit_from` for a profile already read (e.g. the first n of its measurements)."""
    profile_path = profile.path
    archs, latencies = profile.archs(), list(profile.latencies_ms())
    seen = {a.arch_hash() for a in archs}
    warnings: list[str] = []
    for run in runs:
        more, ms, notes = run_measurements(run, profile)
        warnings += notes
        for arch, value in zip(more, ms):
            if arch.arch_hash() not in seen:  # the profile's own (repeated, fastest) timing wins
                seen.add(arch.arch_hash())
                archs.append(arch)
                latencies.append(value)
    h = profile.header
    valid_for = {"space": h["space"], "latency": model_scope(h["latency"]),
                 "fingerprint": h["fingerprint"]}
    sources = {"profiles": [str(profile_path)], "runs": [str(r) for r in runs], "archs": len(archs)}
    return fit_model(archs, latencies, valid_for, sources), warnings


def check_against(model: LatencyModel, profile: Profile) -> tuple[dict[str, Any], list[str]]:
    """The model's accuracy on the profile's architectures it was not fitted on (refused: another
    device, space or latency setting, or nothing held out)."""
    warnings = compare_fingerprints(model.valid_for["fingerprint"], profile.header["fingerprint"],
                                    f"profile {profile.path}")
    warnings += model.applies_to(profile.header["space"], profile.latency, what=f"profile {profile.path}")
    fitted = set(model.archs)
    held = [(a, m) for a, m in zip(profile.archs(), profile.latencies_ms()) if a.arch_hash() not in fitted]
    if not held:
        raise CspnasError(f"every architecture of {profile.path} was used to fit the model; profile a held-out "
                          "set (another --seed and --out) and check on that")
    archs, measured = zip(*held)
    result = accuracy(model.predict_many(archs), np.array(measured))
    return {**result, "skipped_fitted": len(profile.measurements) - len(held)}, warnings


def check_files(model_path: str | Path, profile_path: str | Path) -> tuple[dict[str, Any], list[str]]:
    return check_against(load_model(model_path), _complete(read_profile(profile_path)))
