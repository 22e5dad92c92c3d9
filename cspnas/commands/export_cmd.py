"""`cspnas export RUN --out DIR`: one trial of a run as arch.json, weights, TorchScript, ONNX and MODEL.md."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export a Pareto-front trial (arch, weights, TorchScript, ONNX, MODEL.md)")
    p.add_argument("run", metavar="RUN", help="run directory written by `cspnas search` (results/<name>)")
    from cspnas.objectives import PICKS

    p.add_argument("--pick", default=None, metavar="|".join(["knee", *PICKS, "trial:N"]),
                   help="which trial: the front's knee (default), the best front trial in one objective ("
                        + ", ".join(f"{w}: {s.name}" for w, s in PICKS.items()) + "), or trial N")
    p.add_argument("--max-latency", default=None, metavar="TIME",
                   help="only consider front trials at most this slow, e.g. 8ms, 500us, 0.01s")
    p.add_argument("--format", default=None, metavar="LIST",
                   help="comma list of json, onnx, torchscript, safetensors, onnx-int8 (default: all but "
                        "onnx-int8, the int8 model quantized as the search's int8 latency was)")
    p.add_argument("--backbone", action="store_true",
                   help="TorchScript/ONNX hold the feature extractor (one output per feature level, no head) "
                        "instead of the classifier")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write (never overwritten)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    import pandas as pd

    from cspnas.commands.flags import given
    from cspnas.objectives import OBJECTIVES
    from cspnas.results.export import export_trial, parse_formats
    from cspnas.run_format import load_run
    from cspnas.units import parse_duration_ms

    formats = parse_formats(args.format)
    max_latency = parse_duration_ms(args.max_latency) if args.max_latency is not None else None
    run = load_run(args.run)
    done = export_trial(run, args.out, formats=formats, max_latency_ms=max_latency, backbone=args.backbone,
                        **given(args, "pick"))
    row = run.trial(done.trial)
    measured = [f"{s.title} {s.format(row[s.column])}" for s in OBJECTIVES.values() if pd.notna(row.get(s.column))]
    print(f"trial {done.trial} ({done.pick}): {row['arch_summary']}, " + ", ".join(measured))
    for check in done.checks:
        print(f"{check.file}: max abs diff vs PyTorch {check.max_abs_diff:.2e} "
              f"({'ok' if check.ok else 'FAILED'}, tolerance {check.tolerance:.2g})")
    if not done.weights_kept:
        print("note: the search kept no weights for this trial; only the (untrained) architecture was exported")
    print(f"wrote {', '.join(done.files)} to {done.out}")
    return 0
