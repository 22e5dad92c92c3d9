"""Profiling a device: a designed sample of a search space, timed one by one into a resumable JSON file.

The sample is every (stage type, block type) corner of the space at its cheapest and its most
expensive, then balanced draws: every knob (per stage: type, block, split ratio, width, depth, ...)
cycles through shuffled rounds of its values, so each value appears about equally often, which
random draws only promise on average. The design depends only on the space and the seed, and a
longer one starts with a shorter one, so a re-run (or a larger --n) continues where it stopped.
Each architecture is timed in `repeats` passes over the whole design and keeps its fastest pass:
on a shared machine background load only ever slows a run down. The file is rewritten atomically
after every measurement.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cspnas.cost.settings import LatencySettings, cpu_cores
from cspnas.errors import CspnasError
from cspnas.fsutil import write_atomic
from cspnas.space import ArchConfig
from cspnas.space.arch import arch_from_dict
from cspnas.space.searchspace import SearchSpace

# 2: latencies are LatencySettings.statistic of single calls (p10 by default; version 1 held medians)
PROFILE_FORMAT, PROFILE_VERSION = "cspnas latency profile", 2
NUM_CLASSES = 10  # profiles time the default head; the head's size is a feature, so other class counts predict too
# Latency settings that say how long to time, not what is timed: a model is valid whatever they were.
TIMING_ONLY = ("min_run_time_s", "warmup")
# Fingerprint fields that make another machine (refused) vs. the same machine with other software (warned).
MACHINE_FIELDS = ("cpu", "cores", "machine", "gpu")


def space_id(space: SearchSpace) -> str:
    """Name and content hash of a space's YAML: a model is valid for this exact space."""
    return f"{space.name}@{hashlib.sha256(space.source.encode()).hexdigest()[:12]}"


def fingerprint(settings: LatencySettings) -> dict[str, Any]:
    """The device a latency is measured on: CPU model, cores, GPU, library versions, thread settings."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(settings.torch_device()) if settings.device.startswith("cuda") else None
    from cspnas.cost.backends import latency_backend

    return {"cpu": cpu, "cores": cpu_cores(), "machine": platform.machine(), "gpu": gpu,
            "system": platform.system(), "python": platform.python_version(),
            # the backend's name and library versions; its options are latency settings, compared as such
            "backend": {k: v for k, v in latency_backend(settings.backend).describe(settings).items() if k != "options"},
            "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}


def compare_fingerprints(want: dict[str, Any], have: dict[str, Any], what: str) -> list[str]:
    """Raise (one line) when `have` is another machine than `want`; return the software differences
    (library versions, thread variables) as warnings."""
    for key in MACHINE_FIELDS:
        if want.get(key) != have.get(key):
            raise CspnasError(f"{what} is for another device ({key} {want.get(key)!r}, here {have.get(key)!r}); "
                              "profile this device with `cspnas latency profile` and fit a model for it")
    return [f"{what}: {key} differs ({want.get(key)} vs {have.get(key)}); predictions may be off"
            for key in sorted(set(want) | set(have)) if key not in MACHINE_FIELDS and want.get(key) != have.get(key)]


class _DesignTrial:
    """Stands in for an optuna.Trial: each knob name draws from its own balanced sequence (shuffled
    rounds of its values), so every value of every knob is covered about equally often."""

    def __init__(self, streams: dict[str, Iterator], seed: int):
        self.streams, self.seed = streams, seed

    def _next(self, name: str, choices: tuple) -> Any:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = _rounds(choices, np.random.default_rng([self.seed, zlib.crc32(name.encode())]))
        return next(stream)

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self._next(name, tuple(range(low, high + 1)))

    def suggest_categorical(self, name: str, choices):
        return self._next(name, tuple(choices))


def _rounds(choices: tuple, rng: np.random.Generator) -> Iterator:
    while True:
        for i in rng.permutation(len(choices)):
            yield choices[int(i)]


def design(space: SearchSpace, n: int, seed: int = 0, in_chs: int = 3, corners: bool = True) -> list[ArchConfig]:
    """The first `n` distinct architectures of the space's profiling design (see the module doc);
    `corners=False`: balanced draws only (a held-out set: every fitting profile has the corners)."""
    out: dict[str, ArchConfig] = {}
    both = space.corners(in_chs, NUM_CLASSES) + space.corners(in_chs, NUM_CLASSES, cheapest=False)
    for arch in both if corners else []:
        out.setdefault(arch.arch_hash(), arch)
    streams: dict[str, Iterator] = {}
    misses = 0
    while len(out) < n and misses < 100 * n:  # a tiny space runs out of distinct members
        arch = space.sample(_DesignTrial(streams, seed), in_chs=in_chs, num_classes=NUM_CLASSES)
        misses += arch.arch_hash() in out
        out.setdefault(arch.arch_hash(), arch)
    return list(out.values())[:n]


@dataclass
class Profile:
    """A profile file: what was timed, how, where, and the measurements so far."""

    header: dict[str, Any]  # space, space_yaml, latency settings, n, repeats, seed, corners, fingerprint
    measurements: list[dict[str, Any]]  # {"arch": dict, "arch_hash", "summary", "passes_ms", "iqr_ms", "latency_ms"}
    path: Path | None = None

    @property
    def complete(self) -> bool:
        return len(self.measurements) >= self.header["n"] and all(
            len(m["passes_ms"]) >= self.header["repeats"] for m in self.measurements)

    @property
    def latency(self) -> dict[str, Any]:
        return self.header["latency"]

    def archs(self) -> list[ArchConfig]:
        return [arch_from_dict(m["arch"]) for m in self.measurements]

    def latencies_ms(self) -> np.ndarray:
        return np.array([m["latency_ms"] for m in self.measurements], dtype=float)

    def save(self) -> None:
        assert self.path is not None
        write_atomic(self.path, json.dumps({**self.header, "measurements": self.measurements}, indent=1))


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or one line saying why not (missing, empty, cut short, not an object)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CspnasError(f"{what} {p} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CspnasError(f"{what} {p} cannot be read ({e.__class__.__name__}); check the file") from None
    if not text.strip():
        raise CspnasError(f"{what} {p} is empty; re-create it") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CspnasError(f"{what} {p} is not valid JSON (cut short?) at line {getattr(e, 'lineno', '?')}; "
                          "re-create it") from None
    if not isinstance(data, dict):
        raise CspnasError(f"{what} {p} is not a JSON object; re-create it")
    return data


def read_versioned(path: str | Path, what: str, fmt: str, version: int, *, make: str, redo: str) -> dict[str, Any]:
    """A cspnas JSON file of format `fmt` and this `version` (profiles, latency models), or one line saying
    what it is instead and what to do (`make`: how to create one; `redo`: how to re-create it)."""
    data = read_json(path, what)
    if data.get("format") != fmt:
        raise CspnasError(f"{path} is not a cspnas {what}; {make}")
    if data.get("version") != version:
        raise CspnasError(f"{path}: {what} version {data.get('version')!r}, this cspnas reads version {version}; {redo}")
    return data


def read_profile(path: str | Path) -> Profile:
    data = read_versioned(path, "latency profile", PROFILE_FORMAT, PROFILE_VERSION,
                          make="make one with `cspnas latency profile`", redo="profile again with this cspnas")
    measurements = data.pop("measurements", None)
    needed = ("space", "space_yaml", "latency", "n", "repeats", "seed", "corners", "fingerprint")
    missing = [k for k in needed if k not in data]
    if missing or not isinstance(measurements, list):
        raise CspnasError(f"{path}: profile is missing {', '.join(missing) or 'measurements'}; profile again")
    for i, m in enumerate(measurements):
        if not (isinstance(m, dict) and isinstance(m.get("arch"), dict) and isinstance(m.get("arch_hash"), str)
                and isinstance(m.get("passes_ms"), list) and isinstance(m.get("latency_ms"), (int, float))
                and m["latency_ms"] > 0):
            raise CspnasError(f"{path}: measurement {i} is malformed (needs arch, arch_hash, passes_ms and a "
                              "latency_ms > 0); profile again")
    return Profile(data, measurements, Path(path))


def profile_device(space: SearchSpace, settings: LatencySettings, n: int, out: str | Path, *, seed: int = 0,
                   repeats: int = 2, corners: bool = True, progress: Callable[[str], None] | None = None) -> Profile:
    """Time the first `n` architectures of the space's design under `settings` into `out`, `repeats`
    passes over all of them, keeping each one's fastest pass; continues the measurements already
    there (same space, settings, seed and device; else refused)."""
    import torch

    from cspnas.cost import measure_latency
    from cspnas.models import build_model

    if n < 1 or repeats < 1:
        raise CspnasError(f"--n and --repeats must be >= 1, got {n} and {repeats}")
    header = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "space": space_id(space),
              "space_yaml": space.source, "latency": settings.to_dict(),
              "n": n, "repeats": repeats, "seed": seed, "corners": corners, "fingerprint": fingerprint(settings)}
    path = Path(out)
    done: list[dict[str, Any]] = []
    if path.exists():
        old = read_profile(path)
        old_settings = {f"latency {k}": v for k, v in old.latency.items() if k not in TIMING_ONLY}
        for key, was in {"space": old.header["space"], "seed": old.header["seed"], "corners": old.header["corners"],
                         **old_settings}.items():
            now = header["latency"].get(key[8:]) if key.startswith("latency ") else header[key]
            if was != now:
                raise CspnasError(f"{path} was profiled with another {key} ({was}, now {now}); "
                                  "use the same arguments to continue it, or another --out")
        for warning in compare_fingerprints(old.header["fingerprint"], header["fingerprint"], str(path)):
            print(f"warning: {warning}", file=sys.stderr)
        header["fingerprint"] = old.header["fingerprint"]
        done = old.measurements
    elif not path.parent.is_dir():
        raise CspnasError(f"--out {path}: folder {path.parent} does not exist; create it first")
    profile = Profile(header, done, path)
    by_hash = {m["arch_hash"]: m for m in done}
    plan = design(space, n, seed, settings.in_chs, corners)
    profile.save()
    todo = sum(max(0, repeats - len(by_hash[a.arch_hash()]["passes_ms"]) if a.arch_hash() in by_hash else repeats)
               for a in plan)
    start, timed = time.monotonic(), 0
    for round_ in range(repeats):  # passes over the whole design: a burst of load hits one pass, not all
        for arch in plan:
            entry = by_hash.get(arch.arch_hash())
            if entry is not None and len(entry["passes_ms"]) > round_:
                continue
            torch.manual_seed(0)
            lat = measure_latency(build_model(arch), settings)
            if entry is None:
                entry = by_hash[arch.arch_hash()] = {"arch": arch.to_dict(), "arch_hash": arch.arch_hash(),
                                                     "summary": arch.summary(), "passes_ms": [], "iqr_ms": []}
                done.append(entry)
            entry["passes_ms"].append(lat.ms)
            entry["iqr_ms"].append(lat.iqr_ms)
            entry["latency_ms"] = min(entry["passes_ms"])  # background load only ever slows a run down
            profile.save()
            timed += 1
            if progress is not None:
                each = (time.monotonic() - start) / timed
                progress(f"profile: pass {round_ + 1}/{repeats}, {len(done)}/{n} architectures "
                         f"({arch.summary()} {lat.ms:.3f} ms); {each:.2f} s each, "
                         f"about {each * (todo - timed):.0f} s left")
    return profile

