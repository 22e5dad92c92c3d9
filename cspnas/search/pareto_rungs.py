"""Pareto-aware multi-fidelity (`--scheduler pareto`): which trials go on training at each rung.

Pure (no Ray, no Optuna); `cspnas.search.schedulers.ParetoScheduler` wraps it for Ray Tune.

Rungs
    Epoch counts below the full training where trials are judged, geometric like ASHA's:
    GRACE_PERIOD, GRACE_PERIOD x REDUCTION_FACTOR, ... while below `train.epochs` (5 epochs: 1, 2, 4;
    fewer than 2 epochs: no rung, nothing is stopped).

Rule
    A trial arriving at a rung is judged with its EXACT costs (the non-accuracy objectives, measured
    before training) and its accuracy at that epoch, against the trials recorded at that rung so far
    (asynchronous, as ASHA: it never waits for others). It goes on when, credited with `margin`
    accuracy points (accuracy + margin), it would be on the Pareto front of the rung's records, by
    the run's own objectives and dominance rule (`cspnas.pareto.pareto_mask`: measurement noise in
    latency is a tie). In words: it stops only when a trial that reached the same rung is no worse
    in every cost and more than `margin` more accurate at that epoch (beyond noise where measured).
    While fewer than MIN_RECORDED trials are recorded at a rung, every arrival goes on. Every arrival
    is recorded, whether it goes on or not (it reached the rung), keyed by architecture (a
    re-queued architecture replaces its own earlier record).

Resume
    The records are rebuilt from the study: every trial that trained keeps its per-epoch accuracies
    (`val_acc_per_epoch`), so it reached every rung up to its length (`ParetoRungs.rebuild`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cspnas.objectives import OBJECTIVES
from cspnas.pareto import Objective

# The rungs' geometry, shared with `--scheduler asha` (cspnas.search.schedulers).
GRACE_PERIOD = 1  # first rung, in epochs
REDUCTION_FACTOR = 2  # each rung's epochs are this many times the previous one's
# Arrivals at a rung that go on unjudged: a front of one or two trials says too little.
MIN_RECORDED = 3
ACCURACY = OBJECTIVES["accuracy"]


def rung_epochs(epochs: int, grace: int = GRACE_PERIOD, reduction: int = REDUCTION_FACTOR) -> tuple[int, ...]:
    """Epoch counts of the rungs of a `epochs`-epoch training (those below full fidelity)."""
    rungs, r = [], grace
    while r < epochs:
        rungs.append(r)
        r *= reduction
    return tuple(rungs)


@dataclass(frozen=True)
class Decision:
    go: bool
    reason: str = ""  # why it stopped (empty when it goes on)


@dataclass
class ParetoRungs:
    """The rung records of one search and the rule that reads them (module docstring)."""

    objectives: Sequence[Objective]  # the run's, bound to its references (run_format.objectives_of)
    rungs: tuple[int, ...]
    margin: float
    min_recorded: int = MIN_RECORDED
    records: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)  # rung -> arch hash -> row

    def __post_init__(self) -> None:
        if not any(o.column == ACCURACY.column for o in self.objectives):
            raise ValueError("the Pareto scheduler needs accuracy among the objectives")
        self.records = {r: dict(self.records.get(r, {})) for r in self.rungs}

    def _row(self, trial: int, accuracy: float, costs: Mapping[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"trial": trial}
        for o in self.objectives:
            value = accuracy if o.column == ACCURACY.column else costs.get(o.column)
            row[o.column] = float("nan") if value is None else float(value)
            if o.spread:
                spread = costs.get(o.spread)
                row[o.spread] = 0.0 if spread is None else float(spread)
        return row

    def arrive(self, key: str, trial: int, epoch: int, accuracy: float, costs: Mapping[str, Any]) -> Decision:
        """A trial (`key`: its architecture hash) reports `accuracy` after `epoch` epochs: go on or stop?
        At a rung the arrival is judged against the rung's records so far, then recorded."""
        recorded = self.records.get(epoch)
        if recorded is None:  # not a rung
            return Decision(True)
        row = self._row(trial, accuracy, costs)
        others = [r for k, r in recorded.items() if k != key]
        recorded[key] = row
        if len(others) < self.min_recorded:
            return Decision(True)
        return self._judge(row, others, epoch)

    def _judge(self, row: dict[str, Any], others: list[dict[str, Any]], epoch: int) -> Decision:
        import pandas as pd

        from cspnas.pareto import pareto_mask

        if any(math.isnan(row[o.column]) for o in self.objectives):
            return Decision(True)  # a value is missing: nothing to judge it by
        credited = dict(row)
        sign = 1.0 if ACCURACY.direction == "max" else -1.0
        credited[ACCURACY.column] += sign * self.margin
        table = pd.DataFrame([credited, *others])  # first: an exact tie with a record keeps it going
        if pareto_mask(table, self.objectives)[0]:
            return Decision(True)
        beaten_by = _dominators(credited, others, self.objectives)
        who = f"trial {beaten_by[0]}" if len(beaten_by) == 1 else f"trials {', '.join(map(str, beaten_by))}"
        return Decision(False, f"at the {epoch}-epoch rung, {who} dominated it, even credited with "
                               f"+{self.margin:g} accuracy")

    def rebuild(self, trials: Iterable[tuple[int, Mapping[str, Any]]]) -> "ParetoRungs":
        """Record every trial of a study ((number, user attributes), in trial order) at the rungs its
        per-epoch accuracies reached; returns self. For a resume: no decision is taken."""
        for number, attrs in trials:
            history = attrs.get("val_acc_per_epoch") or []
            key = attrs.get("arch_hash")
            if not key:
                continue
            for rung in self.rungs:
                if len(history) >= rung:
                    self.records[rung][key] = self._row(number, float(history[rung - 1]), attrs)
        return self

    def counts(self) -> dict[int, int]:
        """Trials recorded per rung."""
        return {r: len(v) for r, v in self.records.items()}


def _dominators(row: Mapping[str, Any], others: list[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[int]:
    """The records that dominate `row` (for the stop reason), by the same rule as the front."""
    import pandas as pd

    from cspnas.pareto import pareto_mask

    return [int(o["trial"]) for o in others
            if not pareto_mask(pd.DataFrame([row, o]), objectives)[0]][:3]
