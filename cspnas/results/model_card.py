"""MODEL.md of an exported trial: its metrics, how and where they were measured, and how to load it."""
from __future__ import annotations

import pandas as pd

from cspnas.results.rundir import Run, parse_json_list
from cspnas.space.arch import ArchConfig
from cspnas.units import format_count, format_duration_ms

PICK_WORDS = {"knee": "the knee of the Pareto front (closest to the ideal point)",
              "best": "the most accurate Pareto-front trial", "fastest": "the fastest Pareto-front trial",
              "smallest": "the Pareto-front trial with the fewest MACs"}


def model_card(run: Run, row: pd.Series, arch: ArchConfig, pick: str, files: list[str], checks: list,
               weights_kept: bool) -> str:
    c = run.config
    lat = c.get("latency") or {}
    trial = int(row["trial"])
    size = c.get("input_size") or lat.get("input_size") or "?"
    shape = f"(N, {arch.in_chs}, {size}, {size})"
    dataset = run.setting("dataset", "?")
    epochs = int(row["epochs_done"]) if pd.notna(row.get("epochs_done")) else run.setting("epochs", "?")
    data = c.get("data") if isinstance(c.get("data"), dict) else {}
    chosen = PICK_WORDS.get(pick, f"trial {trial}, chosen by number")
    curve = parse_json_list(row.get("val_acc_per_epoch"))
    lines = [
        f"# cspnas model: trial {trial} of run `{run.name}`",
        "",
        f"Architecture `{arch.summary()}` (arch hash `{arch.arch_hash()}`), {arch.num_classes} classes, "
        f"input {shape} float32 NCHW. Picked as {chosen}."
        + (f" The search resized every image to {size}x{size} at load (`--image-size`; area averaging when "
           "shrinking): resize inputs the same way." if run.setting("image_size") else ""),
        "",
        "## Metrics",
        "",
        "| metric | value | how it was measured |",
        "|---|---|---|",
        f"| validation accuracy | {100 * float(row['accuracy']):.2f}% | top-1 on the `{dataset}` validation split "
        f"after {epochs} epoch(s) of search training (a search budget, not training to convergence) |",
        f"| MACs | {int(row['macs']):,} ({format_count(row['macs'])}) | fvcore, batch 1, input "
        f"1x{arch.in_chs}x{size}x{size}; 1 multiply-add = 1 MAC, batch-norm counted, activations not |",
        f"| parameters | {int(row['params']):,} ({format_count(row['params'])}) | every parameter, buffers excluded |",
        f"| latency | {format_duration_ms(row['latency_ms'])} ± {format_duration_ms(row['latency_iqr_ms'])} (IQR) | "
        f"median forward pass in PyTorch eager mode on {lat.get('device', '?')}, batch {lat.get('batch_size', '?')}, "
        f"{lat.get('threads', '?')} thread(s), {lat.get('dtype', '?')}, input {lat.get('in_chs', arch.in_chs)}x"
        f"{lat.get('input_size', size)}x{lat.get('input_size', size)}, on the machine that ran the search |",
        "",
    ]
    if curve:
        lines += [f"Validation accuracy per epoch: {', '.join(f'{100 * float(a):.2f}%' for a in curve)}.", ""]
    lines += ["## Files", ""]
    what = {"arch.json": "the architecture (`cspnas.build_model` / `cspnas train` read it)",
            "weights.safetensors": "the trained state_dict (safetensors)",
            "model.ts": "TorchScript (traced), runs without cspnas",
            "model.onnx": "ONNX (opset 17, dynamic batch axis; input `input`, output `logits`)"}
    lines += [f"- `{f}`: {what[f]}" for f in files]
    if not weights_kept:
        lines += ["", "**No trained weights**: the search did not keep weights for this trial (it keeps them only "
                  "for Pareto-front members). Train the architecture with "
                  f"`cspnas train arch.json --dataset {dataset} --epochs N --out DIR`."]
    if checks:
        lines += ["", "Checked after export on random input of batch 2 against PyTorch (max abs difference of the "
                  "logits): " + ", ".join(f"{ch.format} {ch.max_abs_diff:.1e}" for ch in checks) + "."]
    lines += ["", "## Inputs", "",
              f"Images as float32 {shape}, scaled to [0, 1] and normalized per channel with the mean and std of the "
              f"`{dataset}` training split, as in the search"
              + (f" (mean {data['mean']}, std {data['std']})" if data.get("mean") and data.get("std") else "")
              + ":", "",
              "```python", "import torch", "from cspnas.data import load_dataset", "",
              f"data = load_dataset(\"{dataset}\")",
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
