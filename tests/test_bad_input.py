"""Bad input, every command, through the real CLI: one clear line, exit 2, and nothing written.

Each case builds its inputs in a fresh directory, snapshots that whole tree (every path with
its size, mtime and SHA-256, directories with their mtime), runs `python -m cspnas.cli ...`
there as a subprocess, and checks that

* the exit code is 2;
* stderr is exactly one line, `cspnas: error: ...`, holding the case's substrings: what is
  wrong (a field path, a flag, a file) and what to do about it;
* there is no traceback anywhere;
* the tree is unchanged: a bad search creates no results/<name>/, a bad --resume does not
  touch the run, a bad export or train writes no --out, nothing lands in the data cache
  (CSPNAS_CACHE_DIR points into the case's directory).

Where output cannot go, the filesystems are real: a read-only bind mount (as root, whom chmod
does not stop; chmod 0555 otherwise) and a full disk (a 4 MB tmpfs filled to the last byte).
Those cases are skipped, with the reason, where mounting is not permitted. A write that fails
mid-way may have made and removed a staging folder: only that folder's mtime may change.

No case may start Ray or train: a sitecustomize on the subprocess's PYTHONPATH replaces
`ray.init` with a function that raises, so validation that comes too late shows up as a
traceback instead of a slow, silent pass. No GPU is visible (CUDA_VISIBLE_DEVICES=""), so the
CUDA cases mean the same on any machine.

Each case is its own process, forked from a "zygote" that imported the heavy third-party libraries
(torch, pandas, optuna, ...) once: the child sets the case's directory, environment, argv and
output files, then runs `cspnas.cli` as `python -m` does (runpy, cspnas itself imported fresh), and
exits through the interpreter's own shutdown, so exit code, tracebacks and atexit behave as in a
fresh `python -m cspnas.cli`. (A fresh interpreter costs 1-4 s of imports per case; 120 cases.)
A few zygotes run cases at once in a module fixture; each case is then its own test, which only
reads its outcome.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import queue
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from run_fixture import TINY_SPACE_YAML, arch_from_params, make_run

TIMEOUT_S = 120
WORKERS = min(4, (os.cpu_count() or 2) + 1)  # the cases spend part of their time waiting on disk

RAY_GUARD = '''
import builtins, sys
_import = builtins.__import__

def _refuse(*args, **kwargs):
    raise RuntimeError("test_bad_input: ray.init() was called; bad input must be rejected before Ray starts")

def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = _import(name, globals, locals, fromlist, level)
    ray = sys.modules.get("ray")
    if ray is not None and hasattr(ray, "init") and ray.init is not _refuse:
        ray.init = _refuse
    return module

builtins.__import__ = _guarded_import
'''

# Reads one JSON request per line ({argv, cwd, env, out, err}); forks; the child runs the case, the
# zygote answers "pid N" at once and "exit CODE" (as subprocess reports it) when the child ends.
ZYGOTE = '''
import importlib, json, os, runpy, sys
for name in ("numpy", "pandas", "torch", "yaml", "rich.console", "rich.table", "optuna", "sqlalchemy",
             "safetensors.torch", "PIL.Image", "psutil", "plotly.graph_objects", "fvcore.nn", "onnx"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not any(m == "cspnas" or m.startswith("cspnas.") for m in sys.modules), "cspnas must load in each case"
requests, replies = sys.stdin, sys.stdout
for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_CREAT),
                               (2, req["err"], os.O_WRONLY | os.O_CREAT)):
            os.dup2(os.open(path, mode, 0o600), fd)
        sys.stdin = open(0, closefd=False)
        sys.argv = ["cspnas.cli", *req["argv"]]
        del requests, replies, line, req
        runpy.run_module("cspnas.cli", run_name="__main__", alter_sys=True)
        sys.exit(0)  # as the interpreter does when the module returns; any exception takes the normal path
    print("pid", pid, file=replies, flush=True)
    _, status = os.waitpid(pid, 0)
    print("exit", os.waitstatus_to_exitcode(status), file=replies, flush=True)
'''


# ---------------------------------------------------------------------------------- inputs

def _arch_dict() -> dict:
    """A small valid architecture (two CSP stages, 1 input channel, 10 classes)."""
    params = {"act": "relu", "s0.stage_type": "csp", "s0.split_ratio": 0.5, "s0.depth": 1,
              "s1.stage_type": "csp", "s1.split_ratio": 0.5, "s1.depth": 1}
    return arch_from_params(params).to_dict()


SPACE_YAML = TINY_SPACE_YAML


@dataclass(frozen=True)
class Runs:
    """Run directories made once per module, copied into the cases that corrupt them."""

    good: Path  # 12 trials, a front with kept weights; trial 3 is pruned, 5 failed
    nothing_complete: Path  # every trial failed or was pruned: no feasible complete trial, an empty front
    resumable: Path  # config.yaml as `cspnas search` writes it, but no study.db
    resumable_used: Path  # config.yaml (budget 4, epochs 5, tpe) and a study in which 3 trials finished


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def arch_file(name: str = "arch.json", edit: Callable[[dict], object] | None = None):
    """Setup: write the small valid arch as `name`, after `edit` changed it in place."""
    def setup(root: Path, runs: Runs) -> None:
        arch = _arch_dict()
        if edit is not None:
            edit(arch)
        write(root / name, json.dumps(arch, indent=2))
    return setup


def space_file(text: str, name: str = "space.yaml"):
    return lambda root, runs: write(root / name, text)


def copy_run(which: str, dest: str = "results/run", edit: Callable[[Path], object] | None = None):
    """Setup: copy one of the module's runs to `dest`, then let `edit` damage it."""
    def setup(root: Path, runs: Runs) -> None:
        target = root / dest
        shutil.copytree(getattr(runs, which), target)
        if edit is not None:
            edit(target)
    return setup


def both(*setups):
    def setup(root: Path, runs: Runs) -> None:
        for s in setups:
            s(root, runs)
    return setup


def mkdir(*paths: str):
    return lambda root, runs: [(root / p).mkdir(parents=True, exist_ok=True) for p in paths]


def corrupt_trials(run: Path) -> None:
    """Keep the header and first row, then a row with far more fields: a CSV parser error."""
    head = (run / "trials.csv").read_text().splitlines()[:2]
    write(run / "trials.csv", "\n".join(head + [",".join(["7"] * 300)]) + "\n")


def _largest_valid_arch() -> str:
    """The biggest network validation accepts: 8 stages of 8192 channels, depth 64, every ratio at 8."""
    stage = {"depth": 64, "out_chs": 8192, "stride": 1, "stage_type": "csp", "block_type": "dark",
             "expand_ratio": 8.0, "block_ratio": 8.0, "bottle_ratio": 8.0}
    return json.dumps({"in_chs": 64, "num_classes": 10, "stem": {"out_chs": [4096]}, "stages": [stage] * 8})


def largest_valid_arch(root: Path, runs: Runs) -> None:
    write(root / "big.json", _largest_valid_arch())


def with_huge_archs(run: Path) -> None:
    """Every trial of the run claims the largest valid architecture (export must refuse before building it)."""
    import pandas as pd

    trials = pd.read_csv(run / "trials.csv")
    trials["arch_json"] = _largest_valid_arch()
    trials.to_csv(run / "trials.csv", index=False)


DEEP = 200_000
# 600 bytes that expand to 9^9 strings through aliases of aliases ("billion laughs")
ALIAS_BOMB = "name: bomb\ndescription:\n" + "".join(
    f"  - &{a} [{', '.join([f'*{p}' if p else 'lol'] * 9)}]\n" for p, a in zip(["", *"abcdefgh"], "abcdefghi")
) + "stem: {out_chs: *i}\nstages:\n  - {depth: 1, out_chs: 16}\n"

HUGE_SPACE = """\
name: huge
stem: {out_chs: 4096, kernel_size: 3, stride: 1}
stages:
  - {depth: 64, out_chs: 8192, stride: 1}
  - {depth: 64, out_chs: 8192, stride: 1}
per_stage: {stage_type: csp, block_type: dark}
"""


def truncate_study(run: Path) -> None:
    db = run / "study.db"
    db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])


def lock_from_another_host(run: Path) -> None:
    write(run / ".lock", json.dumps({"host": "elsewhere.example", "pid": 4242, "started": 1.8e9, "ray": []}))


def edit_settings(run: Path, **changes) -> None:
    """Change settings in a run's config.yaml, as a search with those flags would have written them."""
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    config["settings"].update(changes)
    write(run / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def set_stage(key: str, value):
    def edit(arch: dict) -> None:
        arch["stages"][0][key] = value
    return edit


# ---------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # substrings that name the problem (field path, flag, file, value)
    fix: tuple[str, ...]  # substrings of the advice: what to do instead
    setup: Callable[[Path, Runs], object] | None = field(default=None, repr=False)
    needs: Callable[[], str | None] | None = field(default=None, repr=False)  # why it cannot run here, or None
    # folders whose mtime may change: a write that failed mid-way made and removed its staging folder there
    staged_in: tuple[str, ...] = ()


def case(id: str, argv: str | list[str], names, fix, setup=None, needs=None, staged_in=()) -> Case:
    argv = argv.split() if isinstance(argv, str) else argv
    as_tuple = lambda v: (v,) if isinstance(v, str) else tuple(v)  # noqa: E731
    return Case(id, tuple(argv), as_tuple(names), as_tuple(fix), setup, needs, as_tuple(staged_in))


SEARCH = "search --name s --no-dashboard "  # a new search named s; each case adds one bad thing

CASES = [
    # ---- inspect
    case("inspect-missing-file", "inspect nothere.json", "nothere.json", "pass a preset name"),
    case("inspect-malformed-json", "inspect arch.json", ["arch.json", "malformed JSON"], "at line 2 column 14",
         lambda root, runs: write(root / "arch.json", '{"stem": {"out_chs": [8]},\n  "stages": [}')),
    case("inspect-unknown-field", "inspect arch.json", ["arch.json", "stages[0].widht", "unknown field"],
         "known: act", arch_file(edit=set_stage("widht", 32))),
    case("inspect-split-ratio-out-of-range", "inspect arch.json", ["arch.json", "stages[0].split_ratio", "1.5"],
         "must be in (0, 1)", arch_file(edit=set_stage("split_ratio", 1.5))),
    case("inspect-unknown-preset", "inspect cspdarknet99", "'cspdarknet99'", "see `cspnas presets`"),
    case("inspect-input-size-0", "inspect arch.json --input-size 0", "--input-size", ">= 1", arch_file()),
    case("inspect-input-size-not-a-number", "inspect arch.json --input-size big", ["--input-size", "'big'"],
         "--help", arch_file()),
    case("inspect-num-classes-1", "inspect arch.json --num-classes 1", ["num_classes", "got 1"], ">= 2",
         arch_file()),
    case("inspect-unknown-device", "inspect arch.json --device tpu", "'tpu'", "use 'cpu', 'cuda'", arch_file()),
    case("inspect-cuda-without-gpu", "inspect arch.json --device cuda", ["cuda", "no GPU"], "--device cpu",
         arch_file()),
    case("inspect-float16-on-cpu", "inspect arch.json --dtype float16", "float16", "bfloat16 or float32",
         arch_file()),
    case("inspect-unknown-dtype", "inspect arch.json --dtype float8", ["--dtype", "'float8'"], "choose from",
         arch_file()),

    # inspect: limits before allocation (estimated from the config; nothing is built)
    case("inspect-input-size-100000", "inspect cspresnet50 --input-size 100000 --no-latency",
         ["100000x100000", "needs about", "TiB", "available RAM"], "use a smaller --input-size"),
    case("inspect-billion-classes", "inspect arch.json --num-classes 1000000000 --no-latency",
         ["1,000,000,000 classes", "needs about"], "--num-classes", arch_file()),
    case("inspect-largest-valid-arch", "inspect big.json --no-latency", ["big.json", "needs about", "PiB"],
         "use a smaller", largest_valid_arch),
    case("inspect-threads-over-cores", "inspect arch.json --threads 100000", ["threads", "100000"],
         "at most this machine's CPU core count", arch_file()),
    case("inspect-batch-size-5000", "inspect arch.json --batch-size 5000", ["batch_size", "5000"], "at most 1024",
         arch_file()),
    case("inspect-input-size-over-cap", "inspect arch.json --input-size 5000", ["input_size", "5000"],
         "at most 4096", arch_file()),
    case("inspect-json-nested-200000-deep", "inspect arch.json", ["arch.json", "nested too deeply"],
         "an architecture nests 4 levels",
         lambda root, runs: write(root / "arch.json", "[" * DEEP + "]" * DEEP)),

    # ---- space
    case("space-alias-bomb", "space space.yaml", ["space.yaml", "expands to more than", "nested aliases"],
         "without aliases of aliases", space_file(ALIAS_BOMB)),
    case("space-yaml-nested-200000-deep", "space space.yaml", ["space.yaml", "nested too deeply"],
         "flatten it", space_file("stages: " + "[" * DEEP + "]" * DEEP + "\n")),
    case("space-missing-file", "space nothere.yaml", "nothere.yaml", "use a bundled one"),
    case("space-malformed-yaml", "space space.yaml", ["space.yaml", "malformed YAML"], "at line 4 column 1",
         space_file("name: x\nstages:\n  - {depth: 1, out_chs: [16, 24\n")),
    case("space-unknown-key", "space space.yaml", ["space.yaml", "stagse: unknown key"], "known: ",
         space_file(SPACE_YAML.replace("stages:", "stagse:"))),
    case("space-unknown-stage-key", "space space.yaml", ["stages[1].width: unknown key"], "known: ",
         space_file(SPACE_YAML.replace("{depth: 1, out_chs", "{depth: 1, width: 3, out_chs"))),
    case("space-bad-per-stage-value", "space space.yaml", ["per_stage.stage_type[1]", "'diagonal'"],
         "must be one of csp",
         space_file(SPACE_YAML.replace("stage_type: [csp, plain]", "stage_type: [csp, diagonal]"))),
    case("space-bad-split-ratio", "space space.yaml", ["per_stage.split_ratio[1]", "1.5"], "a number in (0, 1)",
         space_file(SPACE_YAML.replace("split_ratio: [0.25, 0.5]", "split_ratio: [0.25, 1.5]"))),
    case("space-empty-stages", "space space.yaml", "stages:", "non-empty list",
         space_file("name: empty\nstages: []\n")),
    case("space-range-min-over-max", "space space.yaml", ["stages[0].depth", "3..1"], "min <= max",
         space_file(SPACE_YAML.replace("{min: 1, max: 2}", "{min: 3, max: 1}"))),
    case("space-range-bad-keys", "space space.yaml", ["stages[0].depth", "'low'"], "{min: a, max: b}",
         space_file(SPACE_YAML.replace("{min: 1, max: 2}", "{low: 1, max: 2}"))),
    case("space-stage-without-depth", "space space.yaml", "stages[1].depth: required", "required",
         space_file(SPACE_YAML.replace("{depth: 1, out_chs", "{out_chs"))),
    case("space-not-a-mapping", "space space.yaml", "top level", "must be a mapping",
         space_file("- 1\n- 2\n")),

    # ---- search: flags
    case("search-budget-0", SEARCH + "--budget 0", "--budget", ">= 1"),
    case("search-budget-not-a-number", SEARCH + "--budget ten", ["--budget", "'ten'"], "--help"),
    case("search-epochs-0", SEARCH + "--epochs 0", "--epochs", ">= 1"),
    case("search-concurrency-0", SEARCH + "--concurrency 0", "--concurrency", ">= 1"),
    case("search-accuracy-noise-negative", SEARCH + "--accuracy-noise -1", "--accuracy-noise", "[0, 100)"),
    case("search-worker-trials-negative", SEARCH + "--worker-trials -1", "--worker-trials", ">= 0"),
    case("search-lr-0", SEARCH + "--lr 0", "--lr", "> 0"),
    case("search-cpus-per-trial-0", SEARCH + "--cpus-per-trial 0", "--cpus-per-trial", "> 0"),
    case("search-latency-parsecs", SEARCH + "--target-latency 10parsecs", "'10parsecs'", "e.g. 8ms"),
    case("search-latency-without-unit", SEARCH + "--target-latency 10", "'10'", "with a unit"),
    case("search-latency-negative", SEARCH + "--target-latency=-5ms", "'-5ms'", "e.g. 8ms"),
    case("search-max-macs-garbage", SEARCH + "--max-macs lots", "'lots'", "k/M/G suffix"),
    case("search-max-params-5Q", SEARCH + "--max-params 5Q", "'5Q'", "e.g. 300M"),
    case("search-sampler-foo", SEARCH + "--sampler foo", ["--sampler", "'foo'"], "tpe, nsga2, random, qmc"),
    case("search-train-precision-fp16", SEARCH + "--train-precision fp16", ["--train-precision", "'fp16'"],
         "fp32, bf16"),
    case("search-scheduler-foo", SEARCH + "--scheduler foo", ["--scheduler", "'foo'"], "none, asha, pareto"),
    case("search-pareto-margin-1", SEARCH + "--scheduler pareto --pareto-margin 1", ["--pareto-margin", "1.0"],
         "[0, 1)"),
    case("search-prefilter-unknown-score", SEARCH + "--prefilter zico:0.5", ["--prefilter", "'zico'"],
         "use one of synflow, naswot, grad_norm, params"),
    case("search-prefilter-fraction-1", SEARCH + "--prefilter naswot:1", ["--prefilter", "'naswot:1'"], "in (0, 1)"),
    case("search-prefilter-malformed", SEARCH + "--prefilter naswot", ["--prefilter", "'naswot'"],
         "expected SCORE:F"),
    case("search-prefilter-warmup-0", SEARCH + "--prefilter naswot:0.5 --prefilter-warmup 0",
         "--prefilter-warmup", ">= 1"),
    case("search-keep-weights-sometimes", SEARCH + "--keep-weights sometimes", ["--keep-weights", "'sometimes'"],
         "front, all or none"),
    case("search-name-with-slash", "search --no-dashboard --name a/b", ["--name", "'a/b'"],
         "plain directory name"),
    case("search-name-dotdot", "search --no-dashboard --name ..", ["--name", "'..'"], "plain directory name"),
    case("search-unknown-flag", SEARCH + "--budgte 5", ["unrecognized arguments", "--budgte"], "cspnas search --help"),
    case("search-existing-name", "search --no-dashboard --name taken", ["results/taken", "already exists"],
         ["--resume results/taken", "another --name"],
         lambda root, runs: write(root / "results/taken/keep.txt", "precious")),
    # ---- search: space and data
    case("search-space-malformed", SEARCH + "--space bad.yaml", ["bad.yaml", "malformed YAML"], "line",
         space_file("stages: [ {depth: 1\n", "bad.yaml")),
    case("search-dataset-imagenet", SEARCH + "--dataset imagenet", "'imagenet'", "choose one of digits"),
    # offline (cli_env makes every download fail): the message says which file to save where
    case("search-cifar10-empty-data-dir", SEARCH + "--dataset cifar10 --data-dir data",
         ["could not download", "cifar-10-binary.tar.gz"], "save it as data/cifar-10-binary.tar.gz", mkdir("data")),
    case("search-cifar10-default-data-dir", SEARCH + "--dataset cifar10", ["could not download", "cifar-10-binary"],
         "/cache/data/cifar10/cifar-10-binary.tar.gz"),
    case("search-folder-missing-dir", SEARCH + "--dataset folder --data-dir photos", ["photos", "does not exist"],
         "<dir>/train/<class>/"),
    case("search-folder-empty-dir", SEARCH + "--dataset folder --data-dir photos", ["photos", "no train/"],
         "<dir>/train/<class>/", mkdir("photos")),
    # ---- search: devices
    case("search-cuda-without-gpu", SEARCH + "--device cuda", ["'cuda'", "no CUDA GPU"], "use 'cpu' or 'auto'"),
    case("search-latency-cuda-without-gpu", SEARCH + "--latency-device cuda", ["--latency-device cuda", "no GPU"],
         "--latency-device cpu"),
    # ---- search: limits nothing in the space can meet (pre-flight, before any file or Ray)
    case("search-impossible-max-params", SEARCH + "--max-params 10",
         ["space 'default'", "--max-params 10", "params", "fewest among"], "raise the limit"),
    case("search-impossible-latency", SEARCH + "--space edge --target-latency 1ns",
         ["space 'edge'", "--target-latency 1 ns", "fastest"], "raise the limit"),
    # ---- search: limits before allocation
    case("search-latency-threads-over-cores", SEARCH + "--latency-threads 100000", ["threads", "100000"],
         "at most this machine's CPU core count"),
    case("search-latency-batch-size-5000", SEARCH + "--latency-batch-size 5000", ["batch_size", "5000"],
         "at most 1024"),
    case("search-latency-input-size-100000", SEARCH + "--latency-input-size 100000", ["input_size", "100000"],
         "at most 4096"),
    case("search-largest-candidate-does-not-fit", SEARCH + "--space huge.yaml",
         ["largest candidate of space 'huge'", "needs about", "available RAM"], ["smaller space", "--batch-size"],
         space_file(HUGE_SPACE, "huge.yaml")),
    # ---- search --resume
    case("search-resume-missing", "search --no-dashboard --resume results/gone", ["results/gone", "no such run"],
         "--resume takes the folder a search wrote"),
    case("search-resume-without-config", "search --no-dashboard --resume results/run",
         ["results/run", "config.yaml is missing"], "--resume takes the folder a search wrote",
         copy_run("good", edit=lambda run: (run / "config.yaml").unlink())),
    case("search-resume-corrupt-config", "search --no-dashboard --resume results/run",
         ["results/run/config.yaml", "corrupt YAML"], ["restore it", "another --name"],
         copy_run("resumable", edit=lambda run: write(run / "config.yaml", "settings: {name: [run\n"))),
    case("search-resume-without-study", "search --no-dashboard --resume results/run",
         ["results/run", "study.db is missing"], "another --name", copy_run("resumable")),
    case("search-resume-budget-0", "search --no-dashboard --resume results/run --budget 0", "--budget", ">= 1",
         copy_run("resumable")),
    case("search-resume-changed-flags", "search --no-dashboard --resume results/run --epochs 3 --sampler random "
         "--max-macs 5M --budget 9", ["--epochs 3 (the run has 5)", "--sampler random (the run has tpe)",
                                      "--max-macs 5000000 (the run has unset)"],
         ["cannot change on resume", "another --name"], copy_run("resumable_used")),
    case("search-resume-budget-below-used", "search --no-dashboard --resume results/run --budget 2",
         ["--budget 2", "already used 3"], "--budget 3 or more", copy_run("resumable_used")),
    case("search-resume-truncated-study", "search --no-dashboard --resume results/run",
         ["results/run/study.db", "damaged study database"], "restore it from a backup",
         copy_run("resumable_used", edit=truncate_study)),
    case("search-resume-garbage-study", "search --no-dashboard --resume results/run",
         ["results/run/study.db", "damaged study database"], "restore it from a backup",
         copy_run("resumable_used", edit=lambda run: write(run / "study.db", b"\x00garbage" * 4096))),
    case("search-resume-locked-on-another-host", "search --no-dashboard --resume results/run --budget 5",
         ["locked by a search on elsewhere.example (pid 4242", "cannot be checked from"],
         "delete results/run/.lock", copy_run("resumable_used", edit=lock_from_another_host)),

    # ---- finalists (search --finalists, cspnas finalize)
    case("search-finalists-0", SEARCH + "--finalists 0", "--finalists", ">= 1"),
    case("search-final-epochs-0", SEARCH + "--finalists 2 --final-epochs 0", "--final-epochs", ">= 1"),
    case("search-finalists-without-weights", SEARCH + "--finalists 2 --keep-weights none",
         ["--finalists", "--keep-weights none"], "drop --keep-weights none"),
    case("finalize-finalists-0", "finalize results/run --finalists 0", "--finalists", ">= 1", copy_run("good")),
    case("finalize-final-epochs-0", "finalize results/run --final-epochs 0", "--final-epochs", ">= 1",
         copy_run("good")),
    case("finalize-missing-run", "finalize results/gone", ["results/gone", "no such run directory"],
         "results/<name>"),
    case("finalize-not-a-run", "finalize results", ["results", "not a cspnas run"], "the folder a search wrote",
         mkdir("results")),
    case("finalize-run-without-weights", "finalize results/run", ["results/run", "--keep-weights none"],
         "--keep-weights front", copy_run("good", edit=lambda run: edit_settings(run, keep_weights="none"))),
    case("finalize-run-without-its-data", "finalize results/run", ["results/run", "cannot read the run's data"],
         "put the data where the search read it",
         copy_run("good", edit=lambda run: edit_settings(run, dataset="folder", data_dir="/nonexistent/photos"))),
    case("finalize-run-in-use", "finalize results/run", ["results/run", "in use by a search"],
         "wait for it to end", copy_run("good", edit=lock_from_another_host)),

    # ---- report
    case("report-missing-run", "report results/gone", ["results/gone", "no such run directory"],
         "results/<name>"),
    case("report-run-is-a-file", "report results/run/trials.csv", "is a file", "pass its folder results/run",
         copy_run("good")),
    case("report-without-trials-csv", "report results/run", ["results/run", "no trials.csv"],
         "not a run directory", copy_run("good", edit=lambda run: (run / "trials.csv").unlink())),
    case("report-corrupt-trials-csv", "report results/run", ["results/run/trials.csv", "unreadable CSV"],
         "damaged", copy_run("good", edit=corrupt_trials)),
    case("report-trials-csv-missing-columns", "report results/run", ["trials.csv", "missing column(s)"],
         "cspnas search", copy_run("good", edit=lambda run: write(run / "trials.csv", "trial,state\n0,complete\n"))),
    case("report-without-config", "report results/run", ["results/run", "no config.yaml"], "the folder a search wrote",
         copy_run("good", edit=lambda run: (run / "config.yaml").unlink())),
    case("report-truncated-study", "report results/run", ["results/run/study.db", "damaged study database"],
         "restore it from a backup", copy_run("good", edit=truncate_study)),
    case("report-unknown-sort", "report results/run --sort speed", ["--sort", "'speed'"], "choose from",
         copy_run("good")),

    # ---- dashboard
    case("dashboard-missing-run", "dashboard results/gone", ["results/gone", "no such run directory"],
         "results/<name>"),
    case("dashboard-without-trials-csv", "dashboard results/run", ["results/run", "no trials.csv"],
         "not a run directory", copy_run("good", edit=lambda run: (run / "trials.csv").unlink())),
    case("dashboard-truncated-study", "dashboard results/run", ["results/run/study.db", "damaged study database"],
         "restore it from a backup", copy_run("good", edit=truncate_study)),
    case("dashboard-corrupt-trials-csv", "dashboard results/run", ["results/run/trials.csv", "unreadable CSV"],
         "damaged", copy_run("good", edit=corrupt_trials)),

    # ---- export
    case("export-missing-run", "export results/gone --out exported", ["results/gone", "no such run directory"],
         "results/<name>"),
    case("export-pick-missing-trial", "export results/run --pick trial:999 --out exported",
         ["trial 999", "does not exist"], "trials 0..11", copy_run("good")),
    case("export-no-feasible-trial", "export results/run --out exported", "no feasible complete trial",
         "relax its constraints", copy_run("nothing_complete")),
    case("export-truncated-study", "export results/run --out exported",
         ["results/run/study.db", "damaged study database"], "restore it from a backup",
         copy_run("good", edit=truncate_study)),
    case("export-format-exe", "export results/run --format exe --out exported", ["export format", "exe"],
         "json, onnx, torchscript, safetensors", copy_run("good")),
    case("export-out-not-empty", "export results/run --out exported", ["--out exported", "not empty"],
         "pass a new directory", both(copy_run("good"), lambda root, runs: write(root / "exported/mine.txt", "x"))),
    case("export-max-latency-bad-unit", "export results/run --max-latency 8parsecs --out exported",
         "'8parsecs'", "e.g. 8ms", copy_run("good")),
    case("export-max-latency-too-tight", "export results/run --max-latency 1ns --out exported",
         ["--max-latency", "no Pareto-front trial"], "the fastest is trial", copy_run("good")),
    case("export-weights-gone", "export results/run --pick best --format onnx --out exported",
         ["kept no weights"], "--format json", copy_run("good", edit=lambda run: shutil.rmtree(run / "weights"))),
    case("export-arch-does-not-fit", "export results/run --pick best --out exported",
         ["exporting trial", "needs about", "available RAM"], "--format json",
         copy_run("good", edit=with_huge_archs)),
    case("export-without-out", "export results/run", ["--out", "required"], "--help", copy_run("good")),

    # ---- train
    case("train-missing-arch", "train nothere.json --dataset digits --epochs 1", "nothere.json",
         "pass a preset name"),
    case("train-epochs-0", "train arch.json --dataset digits --epochs 0", "epochs", ">= 1", arch_file()),
    case("train-dataset-nope", "train arch.json --dataset nope --epochs 1", "'nope'", "choose one of digits",
         arch_file()),
    case("train-without-dataset", "train arch.json --epochs 1", "--dataset is required", "e.g. --dataset digits",
         arch_file()),
    case("train-out-not-empty", "train arch.json --dataset digits --epochs 1 --out trained",
         ["--out trained", "not empty"], "choose another --out",
         both(arch_file(), lambda root, runs: write(root / "trained/notes.txt", "mine"))),
    case("train-resume-without-checkpoint", "train arch.json --dataset digits --epochs 1 --out trained --resume",
         ["--resume", "checkpoint.pt"], "drop --resume", both(arch_file(), mkdir("trained"))),

    case("train-arch-does-not-fit", "train big.json --dataset digits --epochs 1", ["training big.json", "needs about"],
         "--batch-size", largest_valid_arch),
    case("train-json-nested-200000-deep", "train arch.json --dataset digits --epochs 1",
         ["arch.json", "nested too deeply"], "an architecture nests 4 levels",
         lambda root, runs: write(root / "arch.json", "{\"a\": " * DEEP + "1" + "}" * DEEP)),

    # ---- the CLI itself
    case("unknown-command", "frobnicate", ["'frobnicate'", "invalid choice"], "--help"),
    case("presets-unknown-flag", "presets --wide", ["unrecognized arguments", "--wide"], "cspnas presets --help"),
]


# ---------------------------------------------------------------------------------- filesystems that refuse writes

MOUNTS: list[Path] = []  # mounted by case setups; unmounted once the module's cases have run
LOCKED: list[Path] = []  # made read-only with chmod (not root); made writable again for pytest's cleanup


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True, timeout=30)


@functools.cache
def cannot_mount() -> str | None:
    """Why this process cannot mount a small tmpfs (None: it can)."""
    probe = Path(tempfile.mkdtemp(prefix="cspnas-mount-probe-"))
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (OSError, subprocess.SubprocessError) as e:
        probe.rmdir()
        detail = (getattr(e, "stderr", None) or str(e)).strip().splitlines()[-1:] or [""]
        return f"cannot mount a tmpfs here ({detail[0]}): needs root with CAP_SYS_ADMIN"
    subprocess.run(["umount", str(probe)], check=False, timeout=30)
    probe.rmdir()
    return None


def cannot_make_read_only() -> str | None:
    # chmod does not stop root, so root gets a read-only bind mount instead
    return cannot_mount() if os.geteuid() == 0 else None


def read_only(rel: str):
    """Setup: make root/rel (made if missing) read-only for the command."""
    def setup(root: Path, runs: Runs) -> None:
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _mount("--bind", str(path), str(path))
            MOUNTS.append(path)
            _mount("-o", "remount,bind,ro", str(path))
        else:
            path.chmod(0o555)
            LOCKED.append(path)
    return setup


def full_disk(rel: str, then: Callable[[Path, Runs], object] | None = None):
    """Setup: mount a 4 MB tmpfs at root/rel, let `then` put files on it, then fill it to the last byte."""
    def setup(root: Path, runs: Runs) -> None:
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path))
        MOUNTS.append(path)
        if then is not None:
            then(root, runs)
        fd = os.open(path / ".filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, bytes(65536)):
                pass
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
    return setup


def release_filesystems() -> None:
    for path in reversed(MOUNTS):
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)
    MOUNTS.clear()
    for path in LOCKED:
        path.chmod(0o755)
    LOCKED.clear()


def png(width: int, height: int) -> bytes:
    """An 8-bit greyscale PNG declaring width x height pixels. Only a small image holds all its
    pixels; a huge one holds 64 bytes of data, as a decompression bomb's header lies about its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" + bytes(range(width))[:width]) * height if width * height <= 4096 else bytes(64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def image_folder(edit: Callable[[Path], object] | None = None, dest: str = "photos"):
    """Setup: a valid two-class image folder at `dest` (3 8x8 PNGs per class), then `edit` it."""
    def setup(root: Path, runs: Runs) -> None:
        for cls in ("a", "b"):
            for i in range(3):
                write(root / dest / "train" / cls / f"{i}.png", png(8, 8))
        if edit is not None:
            edit(root / dest)
    return setup


def symlink(rel: str, to: str):
    return lambda folder: (folder / rel).symlink_to(to)


FOLDER = SEARCH + "--dataset folder --data-dir photos"

CASES += [
    # ---- where a command writes: a file in the way, a read-only folder, a full disk
    case("search-results-dir-is-a-file", SEARCH + "--results-dir results.txt",
         ["--results-dir results.txt", "is a file"], "pass a folder",
         lambda root, runs: write(root / "results.txt", "x")),
    case("search-results-dir-under-a-file", SEARCH + "--results-dir notes.txt/runs",
         ["--results-dir notes.txt/runs", "notes.txt is a file"], "pass a folder",
         lambda root, runs: write(root / "notes.txt", "x")),
    case("search-results-dir-read-only", SEARCH + "--results-dir ro", ["--results-dir ro", "read-only"],
         "pass a writable folder", read_only("ro"), cannot_make_read_only),
    case("dashboard-read-only-run", "dashboard results/run", ["results/run/dashboard.html", "read-only"],
         "make it writable or write somewhere else", both(copy_run("good"), read_only("results/run")),
         cannot_make_read_only),
    case("export-out-read-only", "export results/run --out ro/exported", ["ro/exported", "read-only"],
         "make it writable or write somewhere else", both(copy_run("good"), read_only("ro")), cannot_make_read_only),
    case("train-out-read-only", "train arch.json --dataset digits --epochs 1 --out ro/trained",
         ["--out ro/trained", "read-only"], "pass a writable folder", both(arch_file(), read_only("ro")),
         cannot_make_read_only),
    case("export-disk-full", "export results/run --out disk/exported", "disk full writing disk/exported",
         "free space and re-run", both(copy_run("good"), full_disk("disk")), cannot_mount, staged_in="disk/"),
    case("dashboard-disk-full", "dashboard results/run", "disk full writing results/run/dashboard.html",
         "free space and re-run",
         full_disk("results/run", then=lambda root, runs: shutil.copytree(runs.good, root / "results/run",
                                                                          dirs_exist_ok=True)), cannot_mount,
         staged_in="results/run/"),
    case("train-disk-full", "train arch.json --dataset digits --epochs 1 --out disk/trained",
         "disk full writing disk/trained", "free space and re-run", both(arch_file(), full_disk("disk")), cannot_mount,
         staged_in="disk/"),
    # ---- image folders that cannot be read
    case("search-folder-symlink-loop", FOLDER, ["photos/train/loop", "symbolic link loop"], "remove or fix that link",
         image_folder(lambda folder: (symlink("train/loop", "loop2")(folder), symlink("train/loop2", "loop")(folder)))),
    case("train-folder-image-symlink-loop",
         "train arch.json --dataset folder --data-dir photos --epochs 1 --out trained",
         ["photos/train/a/self.png", "symbolic link loop"], "remove or fix that link",
         both(arch_file(), image_folder(symlink("train/a/self.png", "self.png")))),
    case("search-folder-decompression-bomb", FOLDER, ["photos/train/a/huge.png", "decompression bomb"],
         "shrink or remove it", image_folder(lambda folder: write(folder / "train/a/huge.png", png(100_000, 100_000)))),
    case("search-folder-image-over-pillow-limit", FOLDER, ["photos/train/b/big.png", "more than"],
         "shrink or remove it", image_folder(lambda folder: write(folder / "train/b/big.png", png(10_000, 10_000)))),
]


# ---------------------------------------------------------------------------------- running

def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (root included): directories with their mtime, files with size, mtime and SHA-256."""
    out: dict[str, tuple] = {".": ("dir", root.stat().st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISDIR(st.st_mode):
                out[rel + "/"] = ("dir", st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[rel] = ("other", st.st_mode, st.st_mtime_ns)
    return out


def describe_changes(before: dict, after: dict) -> str:
    lines = [f"created {p}" for p in sorted(set(after) - set(before))]
    lines += [f"removed {p}" for p in sorted(set(before) - set(after))]
    lines += [f"changed {p}: {before[p]} -> {after[p]}" for p in sorted(set(before) & set(after))
              if before[p] != after[p]]
    return "\n".join(lines)


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    before: dict
    after: dict
    seconds: float


class Zygote:
    """One process that forks the cases (see ZYGOTE), one case at a time."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.buffer = b""  # read by hand, so select() never misses a line already buffered

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int | None, str, str]:
        out, err = cwd.parent / f"{cwd.name}.stdout", cwd.parent / f"{cwd.name}.stderr"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        pid = int(self._reply("pid", TIMEOUT_S))
        try:
            code: int | None = int(self._reply("exit", TIMEOUT_S))
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            self._reply("exit", TIMEOUT_S)
            code = None
        text = [p.read_text(errors="replace") if p.exists() else "" for p in (out, err)]
        if code is None:
            text[1] += f"\n[timed out after {TIMEOUT_S} s]"
        return code, text[0], text[1]

    def _reply(self, key: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(key)
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, f"the zygote ended (exit {self.proc.wait()}) while a case waited for {key!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        word, value = line.decode().split()
        assert word == key, f"zygote: expected {key!r}, got {line!r}"
        return value

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _run(c: Case, root: Path, runs: Runs, env: dict[str, str], zygotes: queue.Queue) -> Outcome:
    root.mkdir(parents=True)
    if c.setup is not None:
        c.setup(root, runs)
    case_env = dict(env, CSPNAS_CACHE_DIR=str(root / "cache"))
    # a coarse-clock filesystem could give a directory the command touches its old mtime back
    time.sleep(0.01)
    before = snapshot(root)
    start = time.perf_counter()
    zygote = zygotes.get()
    try:
        code, out, err = zygote.run(c.argv, root, case_env)
    finally:
        zygotes.put(zygote)
    seconds = time.perf_counter() - start
    return Outcome(code, out, err, before, snapshot(root), seconds)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("bad-input-runs")
    good = make_run(base, 12, name="good")
    nothing_complete = make_run(base, 4, name="nothing-complete", max_macs=1e12,
                          states={0: "failed", 1: "pruned", 2: "failed", 3: "pruned"})
    resumable = base / "resumable"
    resumable.mkdir()
    from cspnas.search.settings import SearchSettings
    from cspnas.space.searchspace import load_space

    space = load_space("default")
    config = {"cspnas_version": "0.1.0", "settings": SearchSettings(name="resumable").to_dict(),
              "space_yaml": space.source, "space_name": space.name}
    write(resumable / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return Runs(good=good, nothing_complete=nothing_complete, resumable=resumable,
                resumable_used=_resumable_used(base / "resumable-used", config))


def _resumable_used(run: Path, config: dict) -> Path:
    """A run as `cspnas search` leaves it after 3 of its 4 trials: config.yaml and study.db."""
    import optuna

    from cspnas.run_format import create_run_dir, open_storage, open_study, run_objectives

    config = {**config, "settings": {**config["settings"], "name": run.name, "budget": 4, "epochs": 5}}
    create_run_dir(run, config)
    storage = open_storage(run / "study.db")
    objectives = run_objectives(config)
    study = open_study(storage, objectives)
    for i in range(3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.5 + i / 10] * len(objectives), user_attrs={"status": "complete", "arch_hash": f"h{i}"}))
    storage.engine.dispose()
    return run


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The subprocess environment: Ray guard on the path, no GPU, no network (every download goes to a
    closed local port, so the data set cases fail the same way online), no bytecode files, one thread."""
    guard = tmp_path_factory.mktemp("ray-guard")
    write(guard / "sitecustomize.py", RAY_GUARD)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("CSPNAS_CACHE_DIR", None)  # set per case, inside the case's directory
    for key in ("no_proxy", "NO_PROXY"):
        env.pop(key, None)
    env.update({key: "http://127.0.0.1:9" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    return env


@pytest.fixture(scope="module")
def outcomes(request, runs, cli_env, tmp_path_factory) -> dict[str, Outcome]:
    """Run every selected case, WORKERS at a time; id -> Outcome."""
    selected = {item.callspec.params["c"].id for item in request.session.items
                if item.module is sys.modules[__name__] and hasattr(item, "callspec") and "c" in item.callspec.params}
    todo = [c for c in CASES if c.id in selected and not (c.needs and c.needs())]
    cases_root = tmp_path_factory.mktemp("bad-input-cases")
    zygotes: queue.Queue = queue.Queue()
    started = [Zygote(cli_env) for _ in range(WORKERS)]
    for z in started:
        zygotes.put(z)
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = {c.id: pool.submit(_run, c, cases_root / c.id, runs, cli_env, zygotes) for c in todo}
            return {key: f.result() for key, f in futures.items()}
    finally:
        for z in started:
            z.close()
        release_filesystems()


def test_the_table_is_big_and_ids_are_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.argv[0] for c in CASES}
    assert {"inspect", "space", "search", "report", "dashboard", "export", "train", "presets", "finalize"} <= commands


def test_the_ray_guard_works(cli_env, tmp_path):
    """Without this, a case that wrongly reached Ray would not fail fast (or at all)."""
    proc = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1)"], cwd=tmp_path, env=cli_env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode != 0 and "ray.init() was called" in proc.stderr, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(c: Case, outcomes):
    if c.needs and (why := c.needs()):
        pytest.skip(why)
    got = outcomes[c.id]
    shown = f"argv: {' '.join(c.argv)}\nexit: {got.returncode}\nstdout:\n{got.stdout}\nstderr:\n{got.stderr}"
    assert "Traceback" not in got.stdout + got.stderr, shown
    assert got.returncode == 2, shown
    lines = got.stderr.splitlines()
    assert len(lines) == 1, f"stderr must be exactly one line\n{shown}"
    line = lines[0]
    assert line.startswith("cspnas: error: ") and line[len("cspnas: error: "):].strip(), shown
    for part in c.names + c.fix:
        assert part in line, f"expected {part!r} in the message\n{shown}"
    before, after = dict(got.before), dict(got.after)
    for folder in c.staged_in:  # still there, and nothing else changed inside it
        assert after.pop(folder, None) is not None and before.pop(folder)[0] == "dir", shown
    changes = describe_changes(before, after)
    assert not changes, f"the command changed files:\n{changes}\n{shown}"


# ---------------------------------------------------------------------------------- the pre-flight's other side

def test_preflight_accepts_limits_that_only_the_cheapest_corner_meets(tmp_path):
    """The impossible-limit check must not refuse a search that can succeed. In the default space
    on 8x8 digits the smallest network has ~22k params, while 1000 random samples bottom out
    above 60k: the corners it adds to the random sample are what let a 25k limit through."""
    from cspnas.cost import LatencySettings
    from cspnas.search.costs import CostMeter
    from cspnas.search.gate import MeasureGate
    from cspnas.search.preflight import check_constraints_reachable as _check_constraints_reachable
    from cspnas.search.settings import Constraints, SearchSettings
    from cspnas.space.searchspace import load_space

    meter = CostMeter(LatencySettings(in_chs=1, input_size=8, min_run_time_s=0.02), MeasureGate(tmp_path / "locks"), 8)
    space = load_space("default")
    for limits in (Constraints(max_params=25_000), Constraints(max_params=150_000, max_latency_ms=50.0)):
        _check_constraints_reachable(space, SearchSettings(name="ok", constraints=limits), meter, 1, 10)
    assert not any(tmp_path.iterdir()), "the pre-flight must not write (not even the gate's lock files)"
