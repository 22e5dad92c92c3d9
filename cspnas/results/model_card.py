"""MODEL.md of an exported trial: its metrics, how and where they were measured, and how to load it."""
from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pandas as pd

from cspnas.objectives import PICKS
from cspnas.run_format import Run, parse_json_list
from cspnas.space.arch import ArchConfig
from cspnas.units import format_count, format_duration_ms

PICK_WORDS = {"knee": "the knee of the Pareto front (closest to the ideal point)",
              **{word: f"the Pareto-front trial with the best {s.label}" for word, s in PICKS.items()}}


# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that start markup
# (emphasis, links, HTML, entities, code, table cells).
_MARKUP = re.compile(r"([\\`*_\[\]<>&|~#!])")


def _one_line(value) -> str:
    """str(value) with control characters (newlines, tabs...) shown as escapes: a user string
    cannot end a heading, a table row or a code span."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(value))


def _text(value) -> str:
    """A user string as literal Markdown text (no markup, no HTML), safe in a table cell."""
    return _MARKUP.sub(r"\\\1", _one_line(value))


def _code(value, *, in_table: bool = False) -> str:
    """A user string as one code span: fenced by more backticks than it contains; in a table a
    pipe is escaped (GFM splits cells on it even inside code)."""
    text = _one_line(value)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _yes(flag) -> bool:
    """A pareto.csv flag (a front row's; a trial picked by number has none)."""
    return isinstance(flag, (bool, np.bool_)) and bool(flag)


def _engine(lat: dict) -> str:
    """How the latency was timed, from the run's latency settings (older runs: torch eager)."""
    if lat.get("backend") == "onnxruntime":
        return (f"of the exported ONNX ({_text(lat.get('precision', 'fp32'))}) in ONNX Runtime (session "
                "options in trials.csv `latency_backend`)")
    return "in PyTorch eager mode"


def _final_rows(row: pd.Series, dataset: str) -> list[str]:
    """A finalist's metrics rows: its final validation and test accuracy."""
    epochs = int(row["final_epochs"])
    how = (f"after {epochs} epoch(s) of finalist training (retrained from scratch with the search's split, seed "
           "and recipe; `cspnas finalize`), these weights")
    rows = [f"| validation accuracy | {100 * float(row['final_val_acc']):.2f}% | top-1 on the "
            f"{_code(dataset, in_table=True)} validation split {how} |"]
    if pd.notna(row.get("final_test_acc")):
        rows.append(f"| test accuracy | {100 * float(row['final_test_acc']):.2f}% | top-1 on the "
                    f"{_code(dataset, in_table=True)} test split (never seen by the search), the same weights |")
    return rows


def model_card(run: Run, row: pd.Series, arch: ArchConfig, pick: str, files: list[str], checks: list,
               weights_kept: bool) -> str:
    c = run.config
    lat = c.get("latency") or {}
    trial = int(row["trial"])
    on_front = run.front[run.front["trial"] == trial]
    if len(on_front):  # the front's latency is the confirmed one, with its flags
        row = row.copy()
        for key in ("latency_ms", "latency_iqr_ms", "confirmed", "marginal"):
            row[key] = on_front.iloc[0].get(key)
    size = c.get("input_size") or lat.get("input_size") or "?"
    shape = f"(N, {arch.in_chs}, {size}, {size})"
    dataset = run.setting("dataset", "?")
    epochs = int(row["epochs_done"]) if pd.notna(row.get("epochs_done")) else run.setting("epochs", "?")
    data = c.get("data") if isinstance(c.get("data"), dict) else {}
    chosen = PICK_WORDS.get(pick, f"trial {trial}, chosen by number")
    curve = parse_json_list(row.get("val_acc_per_epoch"))
    final = pd.notna(row.get("final_val_acc"))  # a finalist: the exported weights are its final training's
    measured = c.get("measured_on") if isinstance(c.get("measured_on"), dict) else {}
    measured_on = (f"{measured.get('hostname')} ({measured.get('cpu_model')})" if measured
                   else "the machine that ran the search")
    lines = [
        f"# cspnas model: trial {trial} of run {_code(run.name)}",
        "",
        f"Architecture `{arch.summary()}` (arch hash `{arch.arch_hash()}`), {arch.num_classes} classes, "
        f"input {_text(shape)} float32 NCHW. Picked as {chosen}."
        + (f" The search resized every image to {size}x{size} at load (`--image-size`; area averaging when "
           "shrinking): resize inputs the same way." if run.setting("image_size") else ""),
        "",
        "## Metrics",
        "",
        "| metric | value | how it was measured |",
        "|---|---|---|",
        *(_final_rows(row, dataset) if final else []),
        f"| {'brief ' if final else ''}validation accuracy | {100 * float(row['accuracy']):.2f}% | top-1 on the "
        f"{_code(dataset, in_table=True)} validation split "
        f"after {epochs} epoch(s) of search training (a search budget, not training to convergence"
        + ("; not these weights" if final and weights_kept else "") + ") |",
        f"| MACs | {int(row['macs']):,} ({format_count(row['macs'])}) | fvcore, batch 1, input "
        f"1x{arch.in_chs}x{_text(size)}x{_text(size)}; 1 multiply-add = 1 MAC, batch-norm counted, activations not |",
        f"| parameters | {int(row['params']):,} ({format_count(row['params'])}) | every parameter, buffers excluded |",
        f"| latency | {format_duration_ms(row['latency_ms'])} ± {format_duration_ms(row['latency_iqr_ms'])} (IQR) | "
        f"median forward pass {_engine(lat)} on {_text(lat.get('device', '?'))}, "
        f"batch {_text(lat.get('batch_size', '?'))}, {_text(lat.get('threads', '?'))} thread(s), "
        f"{_text(lat.get('dtype', '?'))}, input {_text(lat.get('in_chs', arch.in_chs))}x"
        f"{_text(lat.get('input_size', size))}x{_text(lat.get('input_size', size))}, "
        f"on {_text(measured_on)}"
        + (", confirmed by re-timing at the end of the search (interleaved passes)" if _yes(row.get("confirmed"))
           else "") + " |",
        *([f"| int8 validation accuracy | {100 * float(row['val_acc_int8']):.2f}% | the "
           + ("brief training's weights (not these)" if final else "same trained weights")
           + " quantized as `--format onnx-int8` writes them (ONNX Runtime static QDQ), same split |"]
          if pd.notna(row.get("val_acc_int8")) else []),
        "",
    ]
    if _yes(row.get("marginal")):
        lines += ["**Marginal**: its margin to the run's limit is within the measurement noise (its IQR, at least "
                  "2% of the value), so it may exceed the limit where it is deployed; time it there before relying "
                  "on it.", ""]
    if curve:
        lines += [f"{'Search-training v' if final else 'V'}alidation accuracy per epoch: "
                  f"{', '.join(f'{100 * float(a):.2f}%' for a in curve)}.", ""]
    lines += ["## Files", ""]
    what = {"arch.json": "the architecture (`cspnas.build_model` / `cspnas train` read it)",
            "weights.safetensors": "the trained state_dict (safetensors)",
            "model.ts": "TorchScript (traced), runs without cspnas",
            "model.onnx": "ONNX (opset 17, dynamic batch axis; input `input`, output `logits`)",
            "backbone.ts": "TorchScript (traced) of the backbone: a list of feature maps (see Backbone)",
            "backbone.onnx": "ONNX of the backbone (opset 17, dynamic batch; outputs `features_N`, see Backbone)",
            "model.int8.onnx": "ONNX, int8 (ONNX Runtime static QDQ quantization, calibrated on the run's training "
                               "images as its int8 latency was)",
            "backbone.int8.onnx": "ONNX of the backbone, int8 (static QDQ, calibrated on the run's training images)"}
    lines += [f"- `{f}`: {what[f]}" for f in files]
    if not weights_kept:
        lines += ["", "**No trained weights**: the search did not keep weights for this trial (it keeps them only "
                  "for Pareto-front members). Train the architecture with "
                  + _code(f"cspnas train arch.json --dataset {shlex.quote(_one_line(dataset))} --epochs N --out DIR")
                  + "."]
    if checks:
        lines += ["", "Checked after export on random input of batch 2 against PyTorch (max abs difference of the "
                  "logits): " + ", ".join(f"{ch.format} {ch.max_abs_diff:.1e}" for ch in checks) + "."]
    lines += ["", "## Inputs", "",
              f"Images as float32 {_text(shape)}, scaled to [0, 1] and normalized per channel with the mean and std "
              f"of the {_code(dataset)} training split, as in the search"
              + (f" (mean {_text(data['mean'])}, std {_text(data['std'])})" if data.get("mean") and data.get("std")
                 else "")
              + ":", "",
              "```python", "import torch", "from cspnas.data import load_dataset", "",
              f"data = load_dataset({json.dumps(str(dataset))})",
              "mean = torch.tensor(data.mean).view(1, -1, 1, 1)", "std = torch.tensor(data.std).view(1, -1, 1, 1)",
              "x = (images_uint8.float() / 255 - mean) / std", "```",
              "", "## Load in Python", ""]
    if weights_kept and "weights.safetensors" in files:
        lines += ["```python", "import torch", "from safetensors.torch import load_file", "import cspnas", "",
                  "model = cspnas.build_model(\"arch.json\")",
                  "model.load_state_dict(load_file(\"weights.safetensors\"))", "model.eval()",
                  "with torch.no_grad():", f"    logits = model(torch.zeros(1, {arch.in_chs}, {size}, {size}))",
                  "```", ""]
    else:
        why = "untrained: the search kept no weights" if not weights_kept else "weights not exported (--format)"
        lines += ["```python", "import cspnas", "", f"model = cspnas.build_model(\"arch.json\")  # {why}", "```", ""]
    if "model.ts" in files:
        lines += ["```python", "import torch", "", "model = torch.jit.load(\"model.ts\")",
                  "with torch.no_grad():", f"    logits = model(torch.zeros(1, {arch.in_chs}, {size}, {size}))",
                  "```", ""]
    if "model.onnx" in files:
        lines += ["```python", "import numpy as np", "import onnxruntime as ort", "",
                  "session = ort.InferenceSession(\"model.onnx\", providers=[\"CPUExecutionProvider\"])",
                  f"x = np.zeros((1, {arch.in_chs}, {size}, {size}), np.float32)",
                  "logits = session.run(None, {\"input\": x})[0]",
                  "```", ""]
    return "\n".join(lines)
