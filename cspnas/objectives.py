"""The search objectives as data: one entry per objective, everything else derives from it.

Each entry says what the objective is called (`--objectives`, `--sort`), which trials.csv column
and Optuna user attribute hold it, its direction, how to show it, how to normalise it for the
hypervolume (see `cspnas.pareto`), and its hard limit: the `Constraints` field, the search flag
and how that flag's value is read. Optuna's directions and metric names, the told values, the
constraint values, the CSV columns, the report, the dashboard's axes and export's --pick choices
are all computed from `OBJECTIVES`.

Accuracy is always an objective (it is what training measures); the others are measured before
training, for every candidate, whether or not they are objectives of the run. Light to import
(the CLI reads it to build its flags); the Pareto maths load on first use.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cspnas.errors import CspnasError
from cspnas.units import format_bytes, format_count, format_duration_ms, parse_bytes, parse_count, parse_duration_ms

if TYPE_CHECKING:
    import pandas as pd

    from cspnas.pareto import Objective


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


@dataclass(frozen=True)
class Spec:
    """One objective: identity, display, normalisation and hard limit."""

    name: str  # what users type
    column: str  # trials.csv / pareto.csv column and Optuna user attribute
    direction: str  # "max" | "min"
    title: str  # table header
    label: str  # axis title, with the unit
    format: Callable[[Any], str]  # a value for people
    tickformat: str  # plotly (d3) axis format
    ideal: float  # best conceivable value: normalises to 0
    log: bool = False  # normalise (and plot) on a log scale; for quantities spanning decades
    ref: float | None = None  # fixed hypervolume reference; None: the limit, else 2x a large candidate
    limit: str | None = None  # the Constraints field holding its hard limit
    flag: str | None = None  # the search flag that sets the limit
    parse: Callable[[str], float] | None = None  # reads the flag's value (units)
    flag_help: str = ""
    pick: str | None = None  # export --pick word for "best in this objective"
    spread: str | None = None  # column of the measurement's spread (IQR), shown as "value ± spread"
    # a measured objective: differences within its noise are ties on the front (cspnas.pareto, "Measurement
    # noise"), at least this share of the value; a margin to its limit inside the noise is "marginal"
    noise_floor: float = 0.0
    confirmed: str | None = None  # column of the end-of-search re-measurement; its spread is confirmed + "_iqr"
    # a measured objective whose noise is ABSOLUTE (accuracy: points), set per run: the SearchSettings field
    # holding it (in `noise_unit`s; 0 = exact; its default is measured, see ACCURACY_NOISE_POINTS)
    noise_setting: str | None = None
    noise_unit: float = 1.0  # one unit of the setting in the objective's own unit (points: 0.01)
    binomial: bool = False  # a share of the run's validation images: their binomial noise is a floor too

    @property
    def optuna_direction(self) -> str:
        return "maximize" if self.direction == "max" else "minimize"

    @property
    def ascending(self) -> bool:
        """Sort order that puts the best first."""
        return self.direction == "min"

    @property
    def header(self) -> str:
        return f"{self.title} ± IQR" if self.spread else self.title

    def cell(self, row: Mapping[str, Any]) -> str:
        """The objective's value in a table row, with its spread when it has one."""
        text = self.format(row.get(self.column))
        return f"{text} ± {self.format(row.get(self.spread))}" if self.spread else text


# Brief-training accuracy moves this much, in points, with nothing changed but the training seed or the CPU
# kernels: sqrt(2) x the pooled per-run standard deviation, i.e. the standard deviation of the difference of
# two runs (results/benchmarks/accuracy_noise.json, `python experiments/accuracy_noise.py`; README, Evidence)
ACCURACY_NOISE_POINTS = 2.1

OBJECTIVES: dict[str, Spec] = {s.name: s for s in (
    Spec("accuracy", "accuracy", "max", "accuracy", "validation accuracy", _pct, ".0%", ideal=1.0, ref=0.0,
         pick="best", noise_setting="accuracy_noise", noise_unit=0.01, binomial=True),
    Spec("params", "params", "min", "params", "parameters", format_count, ".3s", ideal=1e3, log=True,
         limit="max_params", flag="--max-params", parse=parse_count, flag_help="hard parameter limit, e.g. 5M"),
    # MACs span decades (1e6..1e10): log scale; below a thousand MACs is not a network
    Spec("macs", "macs", "min", "MACs", "MACs", format_count, ".3s", ideal=1e3, log=True, limit="max_macs",
         flag="--max-macs", parse=parse_count, flag_help="hard multiply-add limit, e.g. 300M", pick="smallest"),
    # latencies of one search sit within about a decade below the target: linear keeps "half the target" at 0.5
    Spec("latency", "latency_ms", "min", "latency", "latency (ms)", format_duration_ms, ".3g", ideal=0.0,
         limit="max_latency_ms", flag="--target-latency", parse=parse_duration_ms,
         flag_help="hard latency limit, e.g. 10ms, 500us, 0.01s", pick="fastest", spread="latency_iqr_ms",
         # 2%: the median pass-to-pass difference of one architecture on a quiet host was 1.6% (README, experiment 6)
         noise_floor=0.02, confirmed="latency_confirmed_ms"),
    # peak activation bytes at batch 1 (cost/memory.py): spans decades with the input size, so log
    Spec("memory", "memory_bytes", "min", "memory", "peak activation memory (bytes)", format_bytes, ".3s",
         ideal=1e3, log=True, limit="max_memory", flag="--max-memory", parse=parse_bytes,
         flag_help="hard limit on peak activation memory at batch 1, e.g. 4MB, 512kB", pick="leanest"),
)}
DEFAULT_OBJECTIVES = ("accuracy", "macs", "latency")
COLUMNS = tuple(s.column for s in OBJECTIVES.values())  # every objective's column, in table order
PICKS = {s.pick: s for s in OBJECTIVES.values() if s.pick}
BY_COLUMN = {s.column: s for s in OBJECTIVES.values()}


def parse_objectives(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'accuracy,latency' -> ('accuracy', 'latency'); None -> the default; accuracy is required."""
    if text is None:
        return DEFAULT_OBJECTIVES
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        raise CspnasError(f"unknown objective {', '.join(unknown) or repr(text)}; "
                          f"use a comma list of {', '.join(OBJECTIVES)}, e.g. accuracy,latency")
    if "accuracy" not in names:
        raise CspnasError(f"--objectives {','.join(names)}: accuracy must be one of them (it is what training "
                          "measures); e.g. accuracy," + ",".join(names))
    if len(set(names)) != len(names):
        raise CspnasError(f"--objectives {','.join(names)}: an objective is listed twice")
    return tuple(names)


def specs(names: Iterable[str]) -> list[Spec]:
    return [OBJECTIVES[n] for n in names]


def optuna_directions(names: Sequence[str]) -> list[str]:
    return [OBJECTIVES[n].optuna_direction for n in names]


def told_values(names: Sequence[str], attrs: Mapping[str, Any]) -> list[float]:
    """The values told to Optuna for a trial's user attributes, in objective order."""
    return [float(attrs.get(OBJECTIVES[n].column) or 0.0) for n in names]


def references(names: Sequence[str], limits: Mapping[str, float | None],
               large: Callable[[], Mapping[str, float]]) -> dict[str, float]:
    """Fixed hypervolume references: the objective's own, else its limit, else 2x the value of a
    large candidate (`large()` measures one; called only when needed)."""
    refs: dict[str, float] = {}
    measured: Mapping[str, float] | None = None
    for s in specs(names):
        if s.ref is not None:
            refs[s.name] = s.ref
        elif limits.get(s.name) is not None:
            refs[s.name] = float(limits[s.name])
        else:
            measured = measured if measured is not None else large()
            refs[s.name] = 2.0 * float(measured[s.column])
    return refs


def bind(names: Sequence[str], refs: Mapping[str, float], noise: Mapping[str, float] | None = None,
         validation_images: int | None = None) -> list["Objective"]:
    """The Pareto maths' objectives (columns, directions, fixed refs and ideals, noise rules) of a run.
    `noise`: the run's absolute noise per objective name, in the setting's units (`Spec.noise_setting`;
    missing or 0: exact); `validation_images`: the count a binomial objective's share is taken of."""
    from cspnas.pareto import Objective  # numpy/pandas: not needed to parse flags

    noise = noise or {}
    out = []
    for s in specs(names):
        absolute = float(noise.get(s.name) or 0.0) * s.noise_unit
        count = int(validation_images or 0) if s.binomial and absolute > 0 else 0
        out.append(Objective(s.column, s.direction, ref=float(s.ref if s.ref is not None else refs[s.name]),
                             ideal=s.ideal, log=s.log, spread=s.spread, noise_floor=s.noise_floor,
                             noise_abs=absolute, noise_count=count))
    return out


def confirmed_spread(spec: Spec) -> str:
    """Column of the confirmed measurement's IQR (latency_confirmed_ms -> latency_confirmed_iqr_ms)."""
    return spec.confirmed.removesuffix("_ms") + "_iqr_ms"


CONFIRMED_COLUMNS = tuple(c for s in OBJECTIVES.values() if s.confirmed for c in (s.confirmed, confirmed_spread(s)))


def settled(df: "pd.DataFrame") -> "pd.DataFrame":
    """A copy of a trials table where re-measured (confirmed) values replace the first ones, with their
    spreads: the numbers the front stands on. `confirmed` says which rows had one."""
    out = df.copy()
    out["confirmed"] = False
    for s in OBJECTIVES.values():
        if s.confirmed and s.confirmed in out.columns:
            has = out[s.confirmed].notna()
            out.loc[has, s.column] = out.loc[has, s.confirmed].astype(float)
            out.loc[has, s.spread] = out.loc[has, confirmed_spread(s)].astype(float)
            out["confirmed"] |= has
    return out


def marginal(df: "pd.DataFrame", limits: Mapping[str, float | None]) -> "pd.Series":
    """Rows whose margin to a hard limit of a measured objective is inside that value's noise (or
    negative): half its IQR, at least its noise floor x the larger of value and limit."""
    import pandas as pd

    from cspnas.pareto import noise_tolerance

    flags = pd.Series(False, index=df.index)
    for s in OBJECTIVES.values():
        limit = limits.get(s.name) if s.limit else None
        if limit is None or not s.spread or s.column not in df.columns:
            continue
        value = df[s.column].astype(float)
        spread = df[s.spread].astype(float) if s.spread in df.columns else 0.0
        noise = noise_tolerance(value, limit, spread, 0.0, s.noise_floor)
        sign = 1.0 if s.direction == "min" else -1.0
        flags |= (sign * (limit - value) <= noise) & value.notna()
    return flags


def check_limits(limits: Mapping[str, float | None], cost: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Optuna constraint values (<= 0 is feasible, relative excess otherwise) and readable violations."""
    values: dict[str, float] = {}
    violations: list[str] = []
    for s in OBJECTIVES.values():
        limit, value = limits.get(s.name), cost.get(s.column)
        if limit is None or value is None:
            continue
        values[s.name] = value / limit - 1.0  # relative, so different units weigh alike
        if value > limit:
            violations.append(f"{s.name} {s.format(value)} > {s.format(limit)}")
    return values, violations


def constraint_flags() -> list[Spec]:
    """The objectives that have a search flag for a hard limit."""
    return [s for s in OBJECTIVES.values() if s.flag]


# -- what a run directory's config.yaml says ---------------------------------------------------------

def run_objectives(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's objectives; runs written before objectives were recorded have the default three."""
    settings = config.get("settings") if isinstance(config.get("settings"), Mapping) else {}
    return parse_objectives(settings.get("objectives") or config.get("objectives"))


def run_limits(config: Mapping[str, Any]) -> dict[str, float | None]:
    """Hard limits by objective name, from the recorded search settings."""
    settings = config.get("settings") if isinstance(config.get("settings"), Mapping) else {}
    constraints = settings.get("constraints") if isinstance(settings.get("constraints"), Mapping) else {}
    return {s.name: _positive(constraints.get(s.limit)) for s in OBJECTIVES.values() if s.limit}


def run_noise(config: Mapping[str, Any]) -> dict[str, float]:
    """The run's absolute noise per objective (`Spec.noise_setting`, in its units); runs made before the
    setting have none recorded: their fronts stay exact, as they were made."""
    settings = config.get("settings") if isinstance(config.get("settings"), Mapping) else {}
    return {s.name: float(settings[s.noise_setting]) for s in OBJECTIVES.values()
            if s.noise_setting and isinstance(settings.get(s.noise_setting), (int, float))}


def run_validation_images(config: Mapping[str, Any]) -> int | None:
    """How many validation images the run's accuracies are shares of (config.yaml's data summary)."""
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    value = data.get("val")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def run_references(config: Mapping[str, Any]) -> dict[str, float]:
    """References by objective name; older runs recorded only macs_ref and latency_ref_ms."""
    refs = dict(config.get("references") or {})
    for name, old_key in (("macs", "macs_ref"), ("latency", "latency_ref_ms")):
        if name not in refs and _positive(config.get(old_key)) is not None:
            refs[name] = float(config[old_key])
    return refs


def _positive(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None
