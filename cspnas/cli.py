"""Command-line interface: argument parsing and error presentation only.

Every command's work lives in the library; here we parse flags, call it, and turn a
CspnasError (bad input the user can fix) into one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from cspnas.commands.flags import add_setting
from cspnas.cost.backends import LATENCY_BACKENDS
from cspnas.cost.settings import DTYPES, LatencySettings
from cspnas.cost.timing import STATISTICS
from cspnas.errors import CspnasError, Interrupted

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, where to look) and exit 2."""

    def error(self, message: str):  # noqa: D401
        raise CspnasError(f"{message} (see `{self.prog} --help`)")


def _add_common_io(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _cmd_presets(args) -> int:
    from cspnas.commands.inspect import presets_table

    return presets_table(as_json=args.json)


def _cmd_inspect(args) -> int:
    from cspnas.commands.inspect import inspect_arch

    return inspect_arch(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cspnas", description="Hardware-aware NAS over the Cross-Stage-Partial design space.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = sub.choices  # name -> subparser, to point usage errors at the right --help

    p = sub.add_parser("presets", help="list published architectures")
    _add_common_io(p)
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("inspect", help="per-stage channels, params, multiply-adds and latency of an architecture")
    p.add_argument("arch", metavar="NAME|ARCH.json", help="preset name (see `cspnas presets`) or architecture JSON")
    p.add_argument("--input-size", type=int, default=None, help="square input side in pixels (default: 224 for presets with 1000 classes, else 32)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-channels", type=int, default=None)
    add_setting(p, "--backend", LatencySettings, help=f"latency backend: {' | '.join(LATENCY_BACKENDS)}")
    add_setting(p, "--precision", LatencySettings, help="latency precision: fp32 | int8 (ONNX Runtime static "
                "quantization, calibrated on random images; needs --backend onnxruntime)")
    add_setting(p, "--device", LatencySettings, help="latency device: cpu | cuda | cuda:N")
    add_setting(p, "--batch-size", LatencySettings, type=int, help="latency batch size")
    add_setting(p, "--threads", LatencySettings, type=int, help="CPU threads for the latency measurement")
    add_setting(p, "--statistic", LatencySettings,
                help=f"what the timed calls are summarized by: {' | '.join(STATISTICS)}")
    add_setting(p, "--dtype", LatencySettings, choices=DTYPES, help="latency dtype")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--memory", action="store_true", help="also measure peak memory")
    _add_common_io(p)
    p.set_defaults(func=_cmd_inspect)

    from cspnas.commands import register_more

    register_more(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the subcommand whose options were mistyped, not the top-level parser
            sub = parser.subcommands.get(getattr(args, "command", None))
            prog = sub.prog if sub is not None else parser.prog
            raise CspnasError(f"unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)")
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except Interrupted as e:
        print(f"cspnas: {e}", file=sys.stderr)
        return e.exit_code
    except CspnasError as e:
        print(f"cspnas: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cspnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
