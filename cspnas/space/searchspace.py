"""Search spaces: YAML loading with field-level errors, size, and define-by-run sampling.

Schema (see search_spaces/default.yaml for a commented example). A value is either
  - a scalar: fixed, not searched;
  - a list: categorical choices;
  - {min: a, max: b}: an integer range (inclusive), for depths.

    name: str
    description: str                     (optional)
    stem:     {out_chs, kernel_size, stride, act}           stem.act defaults to network act
    stages:   [ {depth, out_chs, stride, <any per_stage key>}, ... ]   one entry per stage
    per_stage: {stage_type, block_type, split_ratio, expand_ratio, block_ratio,
                bottle_ratio, groups, se_ratio, down_growth, cross_linear, act}
              sampled independently for every stage (a stage entry may override a key)
    network:  {act, head_dropout}        sampled once per network

Sampling is conditional (define-by-run): a plain stage has no split knobs, only resnext
blocks have groups. A sampled combination the generator would reject is repaired
deterministically (documented in `_repair`), so sampling always yields a valid network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from cspnas.errors import ArchError, CspnasError
from cspnas.space.arch import (
    ACTIVATIONS, BLOCK_TYPES, STAGE_TYPES, ArchConfig, Code, StageConfig, StemConfig, validate,
)
from cspnas.space.kinds import knob_applies

STAGE_KNOBS = ("stage_type", "block_type", "split_ratio", "expand_ratio", "block_ratio", "bottle_ratio",
               "groups", "se_ratio", "down_growth", "cross_linear", "act")
_DEFAULTS = {f.name: f.default for f in fields(StageConfig) if f.name in STAGE_KNOBS}
# A YAML file may use anchors and aliases, but expanded it must stay this small (a real search
# space has a few hundred values): nested aliases can otherwise blow 600 bytes up to GBs.
MAX_YAML_NODES = 100_000


@dataclass(frozen=True)
class IntRange:
    min: int
    max: int

    @property
    def size(self) -> int:
        return self.max - self.min + 1


# a knob value: fixed scalar, tuple of choices, or IntRange
Knob = Any


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    stem: Mapping[str, Knob]
    stages: tuple[Mapping[str, Knob], ...]
    network: Mapping[str, Knob]
    source: str  # the YAML text, recorded in every run's config for reproducibility

    # -- sampling ---------------------------------------------------------------------
    def sample(self, trial, *, in_chs: int, num_classes: int) -> ArchConfig:
        """Define-by-run: ask `trial` (an optuna.Trial) for every knob; always returns a valid arch."""
        net_act = _suggest(trial, "act", self.network.get("act", "leaky_relu"))
        dropout = _suggest(trial, "head_dropout", self.network.get("head_dropout", 0.0))
        stem = StemConfig(
            out_chs=(_suggest(trial, "stem.out_chs", self.stem.get("out_chs", 32)),),
            kernel_size=_suggest(trial, "stem.kernel_size", self.stem.get("kernel_size", 3)),
            stride=_suggest(trial, "stem.stride", self.stem.get("stride", 1)),
            act=_suggest(trial, "stem.act", self.stem.get("act", net_act)),
        )
        stages = []
        for i, spec in enumerate(self.stages):
            p = f"s{i}."
            kw: dict[str, Any] = {
                "depth": _suggest(trial, p + "depth", spec["depth"]),
                "out_chs": _suggest(trial, p + "out_chs", spec["out_chs"]),
                "stride": _suggest(trial, p + "stride", spec.get("stride", 2)),
                "stage_type": _suggest(trial, p + "stage_type", spec.get("stage_type", _DEFAULTS["stage_type"])),
                "block_type": _suggest(trial, p + "block_type", spec.get("block_type", _DEFAULTS["block_type"])),
            }
            for key in STAGE_KNOBS[2:]:
                if not knob_applies(key, kw["stage_type"], kw["block_type"]):
                    continue
                default = net_act if key == "act" else _DEFAULTS[key]
                kw[key] = _suggest(trial, p + key, spec.get(key, default))
            stages.append(StageConfig(**kw))
        arch = ArchConfig(stem=stem, stages=tuple(stages), in_chs=in_chs, num_classes=num_classes,
                          head_dropout=dropout)
        return _repair(arch)

    # -- special members ------------------------------------------------------------------
    def largest(self, in_chs: int, num_classes: int) -> ArchConfig:
        """A big architecture of the space's shape (every stage at its widest and deepest, as csp stages
        of dark blocks at split 0.75): twice its cost is the objectives' default reference."""
        def top(v):
            return v.max if isinstance(v, IntRange) else max(v) if isinstance(v, tuple) else v

        stages = tuple(StageConfig(depth=top(s["depth"]), out_chs=top(s["out_chs"]), stride=top(s.get("stride", 2)),
                                   stage_type="csp", block_type="dark", split_ratio=0.75, bottle_ratio=1.0)
                       for s in self.stages)
        stem = StemConfig(out_chs=(top(self.stem.get("out_chs", 32)),), stride=top(self.stem.get("stride", 1)))
        return ArchConfig(stem=stem, stages=stages, in_chs=in_chs, num_classes=num_classes)

    def corners(self, in_chs: int, num_classes: int, *, cheapest: bool = True) -> list[ArchConfig]:
        """One extreme member per (stage type, block type) pair the space offers, every other knob at its
        cheapest (fewest channels, shallowest, largest stride, no SE, ...) or, with `cheapest=False`, its
        most expensive value. Random samples rarely hit these corners; limits often depend on them."""
        kinds: dict[str, list[str]] = {"stage_type": [], "block_type": []}
        for spec in self.stages:
            for key, names in kinds.items():
                for v in _choices(spec.get(key, _DEFAULTS[key])):
                    if v not in names:
                        names.append(v)
        return [self.sample(_CornerTrial(st, bt, cheapest), in_chs=in_chs, num_classes=num_classes)
                for st in kinds["stage_type"] for bt in kinds["block_type"]]

    # -- size -------------------------------------------------------------------------------
    def size(self) -> int:
        """Number of distinct knob assignments (conditional knobs counted only where they exist)."""
        total = 1
        for key in ("act", "head_dropout"):
            total *= _count(self.network.get(key, 0))
        for key in ("out_chs", "kernel_size", "stride"):
            total *= _count(self.stem.get(key, 0))
        if "act" in self.stem:
            total *= _count(self.stem["act"])
        for spec in self.stages:
            n = _count(spec["depth"]) * _count(spec["out_chs"]) * _count(spec.get("stride", 2))
            combos = 0
            for st in _choices(spec.get("stage_type", _DEFAULTS["stage_type"])):
                for bt in _choices(spec.get("block_type", _DEFAULTS["block_type"])):
                    c = 1
                    for key in STAGE_KNOBS[2:]:
                        if not knob_applies(key, st, bt):
                            continue
                        c *= _count(spec.get(key, 0))
                    combos += c
            total *= n * combos
        return total

    def describe(self) -> list[tuple[str, str]]:
        """(knob, values) rows for printing."""
        rows = [(f"stem.{k}", _fmt(v)) for k, v in self.stem.items()]
        rows += [(f"network.{k}", _fmt(v)) for k, v in self.network.items()]
        for i, spec in enumerate(self.stages):
            rows += [(f"stages[{i}].{k}", _fmt(v)) for k, v in spec.items()]
        return rows


class _CornerTrial:
    """Stands in for an optuna.Trial: answers every knob with its cheapest (or most expensive) value,
    and the given stage and block type where the space offers them."""

    def __init__(self, stage_type: str, block_type: str, cheapest: bool):
        self.stage_type, self.block_type, self.cheapest = stage_type, block_type, cheapest

    def suggest_int(self, name: str, low: int, high: int) -> int:
        # a larger stride is cheaper; everything else ranged (depth, widths) grows the network
        return high if name.endswith("stride") == self.cheapest else low

    def suggest_categorical(self, name: str, choices):
        key = name.rsplit(".", 1)[-1]
        if key in ("stage_type", "block_type"):
            want = self.stage_type if key == "stage_type" else self.block_type
            return want if want in choices else choices[0]
        if all(isinstance(c, bool) for c in choices):
            return not self.cheapest  # down_growth / cross_linear: False is the narrower one
        numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if len(numbers) == len(choices):
            fewer_is_bigger = key in ("stride", "groups")
            return max(numbers) if fewer_is_bigger == self.cheapest else min(numbers)
        return choices[0]


def _choices(v: Knob) -> tuple:
    if isinstance(v, tuple):
        return v
    if isinstance(v, IntRange):
        return tuple(range(v.min, v.max + 1))
    return (v,)


def _count(v: Knob) -> int:
    return v.size if isinstance(v, IntRange) else len(v) if isinstance(v, tuple) else 1


def _fmt(v: Knob) -> str:
    if isinstance(v, IntRange):
        return f"{v.min}..{v.max}"
    if isinstance(v, tuple):
        return "{" + ", ".join(map(str, v)) + "}"
    return str(v)


def _suggest(trial, name: str, v: Knob):
    if isinstance(v, IntRange):
        return trial.suggest_int(name, v.min, v.max)
    if isinstance(v, tuple):
        return trial.suggest_categorical(name, v) if len(v) > 1 else v[0]
    return v


_GROUPS_CODES = (Code.GROUPS_TOO_FEW, Code.GROUPS_INDIVISIBLE, Code.GROUPS_UNSUPPORTED)


def _repair(arch: ArchConfig) -> ArchConfig:
    """Make a sampled combination buildable, deterministically.

    - resnext whose groups don't divide its widths: halve groups down to 2, then fall back
      to a plain bottleneck block (groups 1);
    - fusion_last whose skip part leaves no room in out_chs: expand_ratio 1.0 (always fits).
    """
    stages = list(arch.stages)
    for i in range(len(stages)):
        for _ in range(16):
            candidate = replace(arch, stages=tuple(stages))
            try:
                validate(candidate)
                break
            except ArchError as e:
                if e.stage != i:
                    break  # a later stage's problem; handled in its own iteration
                s = stages[i]
                if e.code in _GROUPS_CODES and s.groups > 2:
                    stages[i] = replace(s, groups=s.groups // 2)
                elif e.code in _GROUPS_CODES:
                    stages[i] = replace(s, block_type="bottleneck", groups=1)
                elif e.code == Code.NO_ROOM and s.expand_ratio != 1.0:
                    stages[i] = replace(s, expand_ratio=1.0)
                else:
                    raise
    arch = replace(arch, stages=tuple(stages))
    validate(arch)
    return arch


# -- loading --------------------------------------------------------------------------------------

_STAGE_ENTRY_KEYS = {"depth", "out_chs", "stride", *STAGE_KNOBS}
_STEM_KEYS = {"out_chs", "kernel_size", "stride", "act"}
_NETWORK_KEYS = {"act", "head_dropout"}
_TOP_KEYS = {"name", "description", "stem", "stages", "per_stage", "network"}


def bundled_spaces() -> dict[str, Path]:
    try:
        root = resources.files("cspnas.search_spaces")
    except ModuleNotFoundError:  # a plain checkout on PYTHONPATH, not installed: the YAMLs sit beside cspnas/
        root = Path(__file__).resolve().parents[2] / "search_spaces"
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a bundled space by name (e.g. 'default') or a YAML file by path."""
    text_name = str(name_or_path)
    bundled = bundled_spaces()
    if text_name in bundled:
        path = bundled[text_name]
    else:
        path = Path(text_name)
        if not path.is_file():
            raise CspnasError(
                f"{path}: no such search space; use a bundled one ({', '.join(sorted(bundled))}) or a YAML file path")
    try:
        text = path.read_text()
    except OSError as e:
        raise CspnasError(f"{path}: cannot read ({e.strerror})") from None
    return parse_space(text, origin=str(path))


def parse_space(text: str, origin: str = "<space>") -> SearchSpace:
    data = load_yaml(text, origin)
    try:
        return _parse(data, text)
    except _SpaceError as e:
        raise CspnasError(f"{origin}: {e}") from None


def load_yaml(text: str, origin: str) -> Any:
    """yaml.safe_load with one-line errors and bounds: at most MAX_YAML_NODES values once aliases are
    expanded (checked on the node graph, before anything is expanded), and no traceback on deep nesting."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise CspnasError(f"{origin}: the YAML expands to more than {MAX_YAML_NODES:,} values through nested "
                              "aliases (*name); write it out without aliases of aliases")
        return yaml.safe_load(text)
    except RecursionError:  # the composer recurses per nesting level
        raise CspnasError(f"{origin}: the YAML is nested too deeply to read; flatten it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise CspnasError(f"{origin}: malformed YAML{where}: {problem}") from None


def _expanded_nodes(root) -> int:
    """How many values `root` becomes once every alias is expanded, counting each shared node once per
    use; memoized, so a billion-laughs document costs its size, not its expansion. Caps at the limit."""
    counts: dict[int, int] = {}

    def count(node) -> int:
        if id(node) in counts:
            return counts[id(node)]
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total = min(total + count(child), MAX_YAML_NODES + 1)
        counts[id(node)] = total
        return total

    return 0 if root is None else count(root)


class _SpaceError(Exception):
    pass


def _parse(data: Any, text: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise _SpaceError("top level: must be a mapping with at least 'stages'")
    _keys("", data, _TOP_KEYS)
    if "stages" not in data:
        raise _SpaceError("stages: required (a list with one entry per stage)")
    stem = _section("stem", data.get("stem", {}), _STEM_KEYS)
    network = _section("network", data.get("network", {}), _NETWORK_KEYS)
    per_stage = _section("per_stage", data.get("per_stage", {}), set(STAGE_KNOBS))
    raw_stages = data["stages"]
    if not isinstance(raw_stages, list) or not raw_stages:
        raise _SpaceError("stages: must be a non-empty list of stage entries")
    if len(raw_stages) > 8:
        raise _SpaceError(f"stages: at most 8 stages, got {len(raw_stages)}")
    stages = []
    for i, entry in enumerate(raw_stages):
        spec = {**per_stage, **_section(f"stages[{i}]", entry, _STAGE_ENTRY_KEYS)}
        for req in ("depth", "out_chs"):
            if req not in spec:
                raise _SpaceError(f"stages[{i}].{req}: required")
        stages.append(spec)
    name = data.get("name", "unnamed")
    if not isinstance(name, str):
        raise _SpaceError(f"name: must be a string, got {name!r}")
    return SearchSpace(name=name, description=str(data.get("description", "")), stem=stem,
                       stages=tuple(stages), network=network, source=text)


def _keys(prefix: str, data: Mapping, known: set[str]) -> None:
    for key in data:
        if key not in known:
            raise _SpaceError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _section(path: str, data: Any, known: set[str]) -> dict[str, Knob]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _SpaceError(f"{path}: must be a mapping, got {type(data).__name__}")
    _keys(f"{path}.", data, known)
    return {k: _knob(f"{path}.{k}", k, v) for k, v in data.items()}


def _knob(path: str, key: str, v: Any) -> Knob:
    if isinstance(v, dict):
        if set(v) != {"min", "max"}:
            raise _SpaceError(f"{path}: a range is written {{min: a, max: b}}, got keys {sorted(v)}")
        lo, hi = v["min"], v["max"]
        for bound in (lo, hi):
            _check_value(path, key, bound)
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in (lo, hi)) or lo > hi:
            raise _SpaceError(f"{path}: range needs integers with min <= max, got {lo}..{hi}")
        return IntRange(lo, hi)
    if isinstance(v, list):
        if not v:
            raise _SpaceError(f"{path}: choice list is empty")
        for j, item in enumerate(v):
            _check_value(f"{path}[{j}]", key, item)
        if len(set(map(repr, v))) != len(v):
            raise _SpaceError(f"{path}: choices contain duplicates")
        return tuple(v)
    _check_value(path, key, v)
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


_CHECKS = {
    "depth": (lambda v: _is_int(v) and 1 <= v <= 64, "an integer in [1, 64]"),
    "out_chs": (lambda v: _is_int(v) and 2 <= v <= 8192, "an integer in [2, 8192]"),
    "kernel_size": (lambda v: _is_int(v) and v in (1, 3, 5, 7), "one of 1, 3, 5, 7"),
    "stride": (lambda v: v in (1, 2) and _is_int(v), "1 or 2"),
    "stage_type": (lambda v: v in STAGE_TYPES, f"one of {', '.join(STAGE_TYPES)}"),
    "block_type": (lambda v: v in BLOCK_TYPES, f"one of {', '.join(BLOCK_TYPES)}"),
    "act": (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "split_ratio": (lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)"),
    "expand_ratio": (lambda v: _is_num(v) and 0 < v <= 8, "a number in (0, 8]"),
    "block_ratio": (lambda v: _is_num(v) and 0 < v <= 8, "a number in (0, 8]"),
    "bottle_ratio": (lambda v: _is_num(v) and 0 < v <= 8, "a number in (0, 8]"),
    "groups": (lambda v: _is_int(v) and 1 <= v <= 1024, "an integer in [1, 1024]"),
    "se_ratio": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "down_growth": (lambda v: isinstance(v, bool), "true or false"),
    "cross_linear": (lambda v: isinstance(v, bool), "true or false"),
    "head_dropout": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def _check_value(path: str, key: str, v: Any) -> None:
    ok, what = _CHECKS[key]
    if not ok(v):
        raise _SpaceError(f"{path}: must be {what}, got {v!r}")
