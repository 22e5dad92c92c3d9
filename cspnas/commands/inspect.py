"""`cspnas presets` and `cspnas inspect`: what an architecture costs, stage by stage."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from cspnas.commands.flags import given
from cspnas.cost import LatencySettings, count_macs, count_params, measure_latency, measure_peak_memory
from cspnas.models import PRESETS, build_model, load_arch
from cspnas.models.families import MEMBERS, family_member
from cspnas.space import stage_channels
from cspnas.space.footprint import ensure_fits, footprint
from cspnas.tables import print_table
from cspnas.units import format_count


def presets_table(*, as_json: bool) -> int:
    rows = []
    for name, make in PRESETS.items():
        arch = make()
        rows.append({"name": name, "params": count_params(build_model(arch)), "stages": arch.summary(),
                     "arch_hash": arch.arch_hash()})
    members = []
    for name, (family, size) in MEMBERS.items():
        arch = family_member(family, size)
        model = build_model(arch)
        members.append({"name": name, "family": family, "size": size, "params": count_params(model),
                        "macs": count_macs(model, in_chs=arch.in_chs, input_size=32).total,
                        "stages": arch.summary(), "arch_hash": arch.arch_hash()})
    if as_json:
        print(json.dumps(rows + members, indent=2))
        return 0
    table = Table(title="Published CSPNet-family presets (1000 classes, 3 input channels)")
    for col in ("name", "params", "stages"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", r["stages"])
    print_table(table)
    table = Table(title="Hand-designed families for small inputs (32 px, 10 classes; README \"Baseline families\")")
    for col in ("name", "family", "params", "MACs", "stages"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for r in members:
        table.add_row(r["name"], r["family"], f"{r['params']:,}", format_count(r["macs"]),
                      r["stages"])
    print_table(table)
    return 0


def inspect_arch(args) -> int:
    arch = load_arch(args.arch)
    arch = arch.with_io(in_chs=args.in_channels, num_classes=args.num_classes)
    size = args.input_size if args.input_size is not None else (224 if arch.num_classes == 1000 else 32)
    if size < 1:
        from cspnas.errors import CspnasError

        raise CspnasError(f"--input-size must be >= 1, got {size}")
    # before anything is allocated (or a latency cap is judged): MACs are counted at batch 1, latency
    # and memory at --batch-size
    batch = 1 if args.no_latency and not args.memory else max(1, args.batch_size or LatencySettings.batch_size)
    ensure_fits(footprint(arch, size).inference_bytes(batch), args.device or LatencySettings.device,
                f"{args.arch} at {size}x{size}, batch {batch}, {arch.num_classes:,} classes",
                "use a smaller --input-size, --batch-size or --num-classes")
    settings = LatencySettings(in_chs=arch.in_chs, input_size=size,
                               **given(args, "backend", "precision", "device", "batch_size", "threads", "dtype",
                                        "statistic"))
    model = build_model(arch)
    macs = count_macs(model, in_chs=arch.in_chs, input_size=size)
    latency = memory = None
    if not args.no_latency:
        latency = measure_latency(model, settings)
    if args.memory:
        memory = measure_peak_memory(model, settings)

    stages = []
    prev = arch.stem.out_chs[-1]
    for i, s in enumerate(arch.stages):
        plan = stage_channels(s, prev)
        stages.append({
            "stage": i, "type": s.stage_type, "block": s.block_type, "depth": s.depth, "stride": s.stride,
            "in_chs": prev, "out_chs": s.out_chs,
            "split": None if s.stage_type == "plain" else [plan.block_in_chs, plan.skip_chs],
            "params": count_params(model.stages[i]), "macs": macs.by_module.get(f"stages.{i}", 0),
        })
        prev = s.out_chs
    out = {
        "arch": args.arch, "arch_hash": arch.arch_hash(), "summary": arch.summary(),
        "input_shape": list(macs.input_shape), "params": count_params(model), "macs": macs.total,
        "macs_convention": macs.convention,
        "stem": {"params": count_params(model.stem), "macs": macs.by_module.get("stem", 0)},
        "stages": stages,
        "head": {"params": count_params(model.head), "macs": macs.by_module.get("head", 0)},
    }
    if latency is not None:
        out["latency_ms"] = {"value": latency.ms, "statistic": latency.settings.statistic, "iqr": latency.iqr_ms,
                             "runs": latency.runs, "noisy": latency.noisy, "settings": latency.settings.to_dict(), "backend": latency.backend}
    if memory is not None:
        out["peak_memory"] = {"bytes": memory.bytes, "method": memory.method}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _print_tables(out)
    return 0


def _print_tables(out: dict) -> None:
    console = Console()
    table = Table(title=f"{out['arch']}  [dim]{out['summary']}  hash {out['arch_hash']}[/dim]")
    for col in ("part", "type/block", "depth", "stride", "channels", "split (blocks|skip)", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("part", "type/block") else "right", no_wrap=col == "part")
    table.add_row("stem", "", "", "", "", "", f"{out['stem']['params']:,}", f"{out['stem']['macs']:,}")
    for s in out["stages"]:
        split = "-" if s["split"] is None else f"{s['split'][0]}|{s['split'][1]}"
        table.add_row(f"stage {s['stage']}", f"{s['type']}/{s['block']}", str(s["depth"]), str(s["stride"]),
                      f"{s['in_chs']}->{s['out_chs']}", split, f"{s['params']:,}", f"{s['macs']:,}")
    table.add_row("head", "", "", "", "", "", f"{out['head']['params']:,}", f"{out['head']['macs']:,}")
    table.add_row("[b]total", "", "", "", "", "", f"[b]{out['params']:,}", f"[b]{out['macs']:,}")
    print_table(table, console)
    console.print(f"input {tuple(out['input_shape'])}; MACs: {out['macs_convention']}")
    if "latency_ms" in out:
        lat = out["latency_ms"]
        st = lat["settings"]
        console.print(
            f"latency: {lat['value']:.3f} ms ({lat['statistic']}), IQR {lat['iqr']:.3f} ms over {lat['runs']} runs"
            f"{' [yellow](noisy)[/yellow]' if lat['noisy'] else ''}  "
            f"[dim]({st['device']}, batch {st['batch_size']}, {st['dtype']}, {st['threads']} thread(s))[/dim]"
        )
    if "peak_memory" in out:
        console.print(f"peak memory: {out['peak_memory']['bytes'] / 2**20:.1f} MiB ({out['peak_memory']['method']})")
