"""Export one trial of a run (picked from the Pareto front) as arch.json, weights, TorchScript, ONNX and MODEL.md.

Everything is written into a hidden sibling of --out and renamed into place only after the
exported models were checked against PyTorch, so an error (a full disk too) leaves nothing behind.
"""
from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cspnas.cost.onnx_runtime import onnx_bytes, quantize_int8, session
from cspnas.errors import CspnasError
from cspnas.fsutil import staged_dir, write_atomic
from cspnas.objectives import PICKS as OBJECTIVE_PICKS
from cspnas.objectives import specs
from cspnas.pareto import knee_index, normalize
from cspnas.run_format import Run
from cspnas.space.arch import ArchConfig
from cspnas.space.footprint import ensure_fits, footprint
from cspnas.units import format_duration_ms

DEFAULT_FORMATS = ("json", "onnx", "torchscript", "safetensors")
FORMATS = (*DEFAULT_FORMATS, "onnx-int8")  # onnx-int8 on request: it reads the run's training images
PICKS = ("knee", *OBJECTIVE_PICKS)  # the knee, or the best front trial in one objective
# Max abs difference allowed between an exported model and PyTorch (float32), per unit of output
# scale: 1e-4 for logits of magnitude <= 1, proportionally more for larger logits, since float32
# rounding (different kernels, fused ops) grows with the values themselves.
TOLERANCE = 1e-4
CHECK_BATCH = 2  # not the export batch (1), so the dynamic batch axis is exercised too

FILE_NAMES = {"json": "arch.json", "safetensors": "weights.safetensors", "torchscript": "model.ts",
              "onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# --backbone: the feature extractor (every feature level, no head) instead of the classifier
BACKBONE_FILE_NAMES = {**FILE_NAMES, "torchscript": "backbone.ts", "onnx": "backbone.onnx",
                       "onnx-int8": "backbone.int8.onnx"}


@dataclass(frozen=True)
class Check:
    """How closely an exported model reproduces PyTorch on random inputs."""

    format: str
    max_abs_diff: float
    output_scale: float = 1.0  # max |PyTorch output| on the check inputs
    file: str = ""

    @property
    def tolerance(self) -> float:
        # int8 differs from float32 by design: it must run and give outputs of the right shapes
        return math.inf if self.format == "onnx-int8" else TOLERANCE * max(1.0, self.output_scale)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < self.tolerance


@dataclass(frozen=True)
class Exported:
    trial: int
    pick: str
    out: Path
    files: tuple[str, ...]
    checks: tuple[Check, ...]
    weights_kept: bool


# ---------------------------------------------------------------- choosing the trial


def parse_formats(text: str | None) -> tuple[str, ...]:
    """'json,onnx' -> ('json', 'onnx'); None -> DEFAULT_FORMATS."""
    if text is None:
        return DEFAULT_FORMATS
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise CspnasError(f"unknown export format {', '.join(unknown) or repr(text)}; "
                          f"use a comma list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))  # de-duplicated, in the user's order


def pick_trial(run: Run, pick: str, max_latency_ms: float | None = None) -> pd.Series:
    """The trials.csv row chosen by `pick` (a PICKS word or trial:N) within the latency limit."""
    pick = pick.strip().lower()
    match = re.fullmatch(r"trial:(\d+)", pick)
    if match:
        row = _complete_trial(run, int(match.group(1)))
        if max_latency_ms is not None and not row["latency_ms"] <= max_latency_ms:
            raise CspnasError(f"trial {row['trial']} takes {format_duration_ms(row['latency_ms'])}, over --max-latency "
                              f"{format_duration_ms(max_latency_ms)}; raise the limit or drop it")
        return row
    if pick not in PICKS:
        raise CspnasError(f"unknown --pick {pick!r}; use one of {', '.join(PICKS)} or trial:N")
    front = run.front
    if front.empty:
        raise CspnasError(f"run {run.name} has no feasible complete trial to export; let the search run longer "
                          "or relax its constraints")
    if max_latency_ms is not None:
        within = front[front["latency_ms"] <= max_latency_ms]
        if within.empty:
            fastest = front.loc[front["latency_ms"].idxmin()]
            raise CspnasError(f"no Pareto-front trial runs within --max-latency {format_duration_ms(max_latency_ms)}; "
                              f"the fastest is trial {fastest['trial']} at {format_duration_ms(fastest['latency_ms'])}")
        front = within
    chosen = _choose(run, front, pick)
    return _complete_trial(run, int(chosen["trial"]))


def _choose(run: Run, front: pd.DataFrame, pick: str) -> pd.Series:
    objectives = specs(run.objectives)
    if pick in OBJECTIVE_PICKS:
        # ties: the run's other objectives in order, then the lower trial number (stable)
        order = [OBJECTIVE_PICKS[pick]] + [s for s in objectives if s is not OBJECTIVE_PICKS[pick]]
        ranked = front.sort_values([s.column for s in order] + ["trial"],
                                   ascending=[s.ascending for s in order] + [True], kind="stable")
        return ranked.iloc[0]
    knees = front[front["knee"]]
    if len(knees):
        return knees.iloc[0]
    # the front's knee was filtered out: the knee of what is left, by the same rule and refs
    bound = run.bound_objectives()
    pts = normalize(front[[o.column for o in bound]].to_numpy(dtype=float), bound)
    return front.iloc[knee_index(pts)]


def _complete_trial(run: Run, number: int) -> pd.Series:
    row = run.trial(number)
    if row is None:
        raise CspnasError(f"trial {number} does not exist in run {run.name} "
                          f"(trials {run.trials['trial'].min()}..{run.trials['trial'].max()})")
    if row["state"] != "complete" or pd.isna(row["accuracy"]):
        raise CspnasError(f"trial {number} of run {run.name} is {row['state']}, not complete; "
                          "pick a complete trial (see `cspnas report`)")
    return row


# ---------------------------------------------------------------- writing


def export_trial(run: Run, out: str | Path, *, pick: str = "knee", formats: tuple[str, ...] = DEFAULT_FORMATS,
                 max_latency_ms: float | None = None, backbone: bool = False) -> Exported:
    """Pick a trial and export it into the new or empty directory `out` (never overwrites). With
    `backbone`, TorchScript and ONNX hold its feature extractor (`CspNet.features()`: every feature
    level, one output each) instead of the classifier."""
    out = Path(out).expanduser()
    _check_out(out)
    row = pick_trial(run, pick, max_latency_ms)
    trial = int(row["trial"])
    arch = _arch(row)
    weights = run.weights_path(row)
    if weights is None and set(formats) != {"json"}:
        raise CspnasError(f"trial {trial} kept no weights (a search keeps them only for Pareto-front members); "
                          f"export its architecture with --format json and train it with `cspnas train`")
    if set(formats) != {"json"}:  # the model is built and run on the CPU, at the check batch
        size = input_shape(run, arch)[-1]
        ensure_fits(footprint(arch, size).inference_bytes(CHECK_BATCH), "cpu",
                    f"exporting trial {trial} at {size}x{size}", "export it with --format json on this machine")
    with staged_dir(out) as tmp:  # `out` appears only once every file is written and checked
        files, checks = _write_all(run, row, arch, weights, formats, tmp, backbone)
        from cspnas.results.model_card import model_card

        card = model_card(run, row, arch, pick, files, checks, weights is not None)
        if backbone:
            card += _backbone_card(arch, input_shape(run, arch))
        write_atomic(tmp / "MODEL.md", card)
    return Exported(trial=trial, pick=pick, out=out, files=tuple(files) + ("MODEL.md",), checks=tuple(checks),
                    weights_kept=weights is not None)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CspnasError(f"--out {out} is a file; pass a new directory, e.g. {out.with_suffix('')}-export")
    if out.is_dir() and any(out.iterdir()):
        raise CspnasError(f"--out {out} already exists and is not empty; nothing was written, pass a new directory "
                          f"such as {out.parent / (out.name + '-2')}")


def _arch(row: pd.Series) -> ArchConfig:
    text = row.get("arch_json")
    if not isinstance(text, str) or not text.strip():
        raise CspnasError(f"trial {row['trial']} has no arch_json in trials.csv; the run directory is damaged")
    return ArchConfig.from_json(text)


def input_shape(run: Run, arch: ArchConfig, batch: int = 1) -> tuple[int, int, int, int]:
    """NCHW input the search measured with (config input_size/in_chs, else its latency settings)."""
    lat = run.config.get("latency") or {}
    size = run.config.get("input_size") or lat.get("input_size") or 32
    return (batch, arch.in_chs, int(size), int(size))


def _write_all(run: Run, row: pd.Series, arch: ArchConfig, weights: Path | None, formats: tuple[str, ...],
               tmp: Path, backbone: bool = False) -> tuple[list[str], list[Check]]:
    from cspnas.models import build_model

    names = BACKBONE_FILE_NAMES if backbone else FILE_NAMES
    files, checks = [], []
    write_atomic(tmp / names["json"], arch.to_json() + "\n")
    files.append(names["json"])
    if set(formats) == {"json"}:
        return files, checks
    model = build_model(arch).eval()
    _load_weights(model, weights, int(row["trial"]))
    if backbone:
        model = model.features().eval()
    outputs = [f"features_{i}" for i in model.out_indices] if backbone else ["logits"]
    example = torch.zeros(input_shape(run, arch))
    torch.manual_seed(0)
    check_input = torch.randn(input_shape(run, arch, CHECK_BATCH))
    with torch.no_grad():
        expected = _numpy(model(check_input))
    if "safetensors" in formats:
        write_atomic(tmp / names["safetensors"], weights.read_bytes())
        files.append(names["safetensors"])
    if "torchscript" in formats:
        path = tmp / names["torchscript"]
        _write_torchscript(model, example, path)
        checks.append(Check("torchscript", _diff(_run_torchscript(path, check_input), expected), _scale(expected),
                            path.name))
        files.append(path.name)
    onnx_data = onnx_bytes(model, example, outputs) if {"onnx", "onnx-int8"} & set(formats) else b""
    if "onnx" in formats:
        path = tmp / names["onnx"]
        write_atomic(path, onnx_data)
        checks.append(Check("onnx", _diff(_run_onnx(path, check_input), expected), _scale(expected), path.name))
        files.append(path.name)
    if "onnx-int8" in formats:  # quantized exactly as the search's latency backend quantizes
        path = tmp / names["onnx-int8"]
        write_atomic(path, quantize_int8(onnx_data, run_calibration(run, input_shape(run, arch)[-1])))
        checks.append(Check("onnx-int8", _diff(_run_onnx(path, check_input), expected), _scale(expected),
                            path.name))
        files.append(path.name)
    bad = [c for c in checks if not c.ok]
    if bad:
        worst = max(bad, key=lambda c: c.max_abs_diff)
        raise CspnasError(f"the exported {worst.format} model differs from PyTorch by {worst.max_abs_diff:.2e} "
                          f"(> {worst.tolerance:.2g}); nothing was written; please report this architecture")
    return files, checks


def _load_weights(model: torch.nn.Module, path: Path, trial: int) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise CspnasError(f"{path}: unreadable weights of trial {trial} ({e}); the run directory is damaged") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CspnasError(f"{path}: weights do not fit trial {trial}'s architecture ({first})") from None


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    # trace, not script: CspNet has no data-dependent control flow, and tracing handles every block type
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        traced = torch.jit.trace(model, example, strict=False)  # strict=False: a backbone returns a list
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    write_atomic(path, buffer.getvalue())


def _run_torchscript(path: Path, x: torch.Tensor) -> list[np.ndarray]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return _numpy(torch.jit.load(str(path)).eval()(x))


def _run_onnx(path: Path, x: torch.Tensor) -> list[np.ndarray]:
    return session(path).run(None, {"input": x.numpy()})


def run_calibration(run: Run, size: int) -> np.ndarray:
    """The calibration images the run's int8 latency was (or would be) calibrated on: its latency
    settings' count and seed, drawn from its own training split."""
    from cspnas.cost.settings import LatencySettings
    from cspnas.data import load_dataset
    from cspnas.search.settings import SearchSettings
    from cspnas.train.quantized import calibration_batch

    settings = SearchSettings.from_dict(run.config["settings"])
    latency = LatencySettings.from_dict(run.config.get("latency") or {})
    return calibration_batch(load_dataset(**settings.data_spec()), latency.calibration_images,
                             latency.calibration_seed, size)


def _numpy(out: torch.Tensor | list[torch.Tensor] | tuple) -> list[np.ndarray]:
    """A model's output (logits, or a backbone's feature maps) as a list of arrays."""
    return [t.numpy() for t in out] if isinstance(out, (list, tuple)) else [out.numpy()]


def _scale(expected: list[np.ndarray]) -> float:
    return max((float(np.max(np.abs(e))) for e in expected if e.size), default=1.0)


def _diff(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """Max abs difference over every output; inf when the outputs' number or shapes differ."""
    if len(got) != len(expected) or any(np.shape(g) != e.shape for g, e in zip(got, expected)):
        return float("inf")
    return max(float(np.max(np.abs(np.asarray(g, np.float64) - e.astype(np.float64)))) for g, e in zip(got, expected))


def _backbone_card(arch: ArchConfig, shape: tuple[int, ...]) -> str:
    levels = arch.feature_levels()
    rows = [f"| `features_{i}` | {m['num_chs']} | {m['reduction']} | `{m['module']}` |" for i, m in enumerate(levels)]
    x = f"torch.zeros(1, {', '.join(map(str, shape[1:]))})"
    return "\n".join([
        "## Backbone", "",
        "`backbone.ts` and `backbone.onnx` hold the network without its head: one output per feature level "
        "(the last map at each reduction, as timm's `features_only`), checked against PyTorch like the "
        "classifier. Map size = input size / reduction.", "",
        "| output | channels | reduction | module |", "|---|---|---|---|", *rows, "",
        "```python", "import torch", "from safetensors.torch import load_file", "import cspnas", "",
        "net = cspnas.build_model(\"arch.json\")",
        "net.load_state_dict(load_file(\"weights.safetensors\"))",
        "backbone = net.features(out_indices=None).eval()  # or e.g. (2, 3, 4); feature_info: channels, reduction",
        f"features = backbone({x})", "```", ""])
