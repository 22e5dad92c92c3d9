"""`cspnas latency profile|fit|check`: profile a device, fit a latency model, check it on held-out archs."""
from __future__ import annotations

import json
import sys

from cspnas.commands.flags import add_setting
from cspnas.cost.settings import LatencySettings


def register(sub) -> None:
    from cspnas.cost.backends import LATENCY_BACKENDS
    from cspnas.cost.timing import STATISTICS

    p = sub.add_parser("latency", help="latency models: profile a device once, fit, check, search with it anywhere")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    q = verbs.add_parser("profile", help="time a designed sample of a search space on this device")
    q.add_argument("--space", default="default", help="bundled space name or YAML path (default default)")
    add_setting(q, "--input-size", LatencySettings, type=int, help="square input side in pixels")
    add_setting(q, "--backend", LatencySettings, help=f"latency backend: {' | '.join(LATENCY_BACKENDS)}")
    q.add_argument("--precision", default=None, help="latency precision of the backend (e.g. int8), if it has one")
    add_setting(q, "--device", LatencySettings, help="cpu | cuda | cuda:N")
    add_setting(q, "--threads", LatencySettings, type=int, help="CPU threads while timing")
    add_setting(q, "--batch-size", LatencySettings, type=int, help="batch size while timing")
    add_setting(q, "--statistic", LatencySettings, help="what each architecture's call times are summarized by: "
                f"{' | '.join(STATISTICS)} (a search with the model must use the same --latency-statistic)")
    q.add_argument("--n", type=int, default=300, help="architectures to time (default 300)")
    q.add_argument("--repeats", type=int, default=2, help="passes over them; each keeps its fastest (default 2)")
    q.add_argument("--seed", type=int, default=0, help="seed of the design (another seed: a held-out set)")
    q.add_argument("--held-out", action="store_true",
                   help="a held-out set for `check`: balanced draws only, without the space's corners (use another --seed)")
    q.add_argument("--out", required=True, metavar="DEVICE.json", help="profile file (continued if it exists)")
    q.set_defaults(func=_profile)

    q = verbs.add_parser("fit", help="fit a latency model to a profile (and the measured latencies of runs)")
    q.add_argument("profile", metavar="DEVICE.json")
    q.add_argument("runs", nargs="*", metavar="RUN", help="search runs measured on the same device and settings")
    q.add_argument("--out", required=True, metavar="MODEL.json")
    q.set_defaults(func=_fit)

    q = verbs.add_parser("check", help="a model's accuracy on a profile's architectures it was not fitted on")
    q.add_argument("model", metavar="MODEL.json")
    q.add_argument("profile", metavar="DEVICE.json")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_check)


def _warn(lines) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def _profile(args) -> int:
    from cspnas.commands.flags import given
    from cspnas.latency_model.profile import profile_device
    from cspnas.space.searchspace import load_space

    # --precision is a LatencySettings field only where a backend defines precisions; elsewhere
    # from_dict refuses it by name
    chosen = {**given(args, "input_size", "backend", "device", "threads", "batch_size", "precision",
                     "statistic")}
    settings = LatencySettings.from_dict(chosen)
    space = load_space(args.space)
    live = sys.stderr.isatty()

    def progress(line: str) -> None:
        print(("\r" + line + "\x1b[K") if live else line, end="" if live else "\n", file=sys.stderr, flush=True)

    profile = profile_device(space, settings, args.n, args.out, seed=args.seed, repeats=args.repeats,
                             corners=not args.held_out, progress=progress)
    if live:
        print(file=sys.stderr)
    print(f"{len(profile.measurements)} architectures of space {profile.header['space']} timed at "
          f"{settings.input_size}x{settings.input_size} ({settings.backend}, {settings.device}): {args.out}")
    return 0


def _fit(args) -> int:
    from cspnas.latency_model.fitting import fit_from

    model, warnings = fit_from(args.profile, args.runs)
    _warn(warnings)
    model.save(args.out)
    s = model.fit.get("cross_validated") or model.fit["in_sample"]
    how = "cross-validated (5 folds)" if "cross_validated" in model.fit else "in-sample"
    kind = "sum of per-op costs" + (" + boosted correction" if model.correction else "")
    print(f"fitted on {model.fit['archs']} architectures ({kind}): {how} {s['within_10pct']:.1%} within +-10%, "
          f"Spearman {s['spearman']:.3f}; check it on a held-out profile with "
          f"`cspnas latency check {args.out} HELDOUT.json`")
    print(f"model: {args.out}")
    return 0


def _check(args) -> int:
    from cspnas.latency_model.fitting import check_files

    result, warnings = check_files(args.model, args.profile)
    _warn(warnings)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"held out: {result['n']} architectures ({result['skipped_fitted']} used in fitting skipped)\n"
              f"within +-10%: {result['within_10pct']:.1%}\nSpearman: {result['spearman']:.3f}\n"
              f"median bias: {result['median_bias']:+.1%}\n90th percentile |error|: {result['p90_abs_error']:.1%}")
    return 0
