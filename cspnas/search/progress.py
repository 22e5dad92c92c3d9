"""Live search status: a rich status line on a terminal, plain lines in a log.

The line shows each running trial's epoch progress. The budget counts architectures trained;
infeasible candidates are screened out without training and shown apart. The ETA is the epochs
still to train (those of the running trials, plus the remaining budget) times the seconds per
epoch seen so far, spread over the concurrent trials. Until a first epoch has finished there is no ETA, rather than a wrong one.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace

from rich.console import Console
from rich.live import Live
from rich.text import Text


@dataclass(frozen=True)
class Running:
    """A trial in training, as of its last report."""

    trial: int
    epochs_done: int
    seconds: float  # since the trial was handed to Ray


@dataclass(frozen=True)
class Status:
    done: int
    budget: int
    running: tuple[Running, ...]
    infeasible: int
    failed: int
    pruned: int
    best_accuracy: float | None
    front_size: int
    hypervolume: float
    elapsed_s: float
    epochs: int = 1  # per trial
    epoch_seconds: float | None = None  # mean training seconds per epoch so far; None before the first
    trained_share: float = 1.0  # of the trained-state candidates, the share that needed training (twins did not)
    concurrency: int = 1
    prefiltered: int = 0  # --prefilter: feasible candidates not trained for a low zero-cost score

    def eta_s(self) -> float | None:
        if self.epoch_seconds is None:
            return None
        left = max(0, self.budget - self.done - len(self.running))
        epochs_left = left * self.trained_share * self.epochs + sum(
            max(0, self.epochs - r.epochs_done) for r in self.running)
        return epochs_left * self.epoch_seconds / max(1, self.concurrency)

    def aged(self, seconds: float) -> "Status":
        """The same status `seconds` later (a live display ticks between updates)."""
        return replace(self, elapsed_s=self.elapsed_s + seconds,
                       running=tuple(replace(r, seconds=r.seconds + seconds) for r in self.running))

    def line(self) -> str:
        eta = self.eta_s()
        best = f"{self.best_accuracy:.4f}" if self.best_accuracy is not None else "-"
        running = f"running {len(self.running)}" + ("".join(
            f"{':' if i == 0 else ','} #{r.trial} epoch {r.epochs_done}/{self.epochs} {_dur(r.seconds)}"
            for i, r in enumerate(self.running)))
        prefiltered = f"prefiltered {self.prefiltered} | " if self.prefiltered else ""
        return (f"{self.done}/{self.budget} trained | {running} | infeasible {self.infeasible} | {prefiltered}"
                f"failed {self.failed} | pruned {self.pruned} | best acc {best} | front {self.front_size} | "
                f"HV {self.hypervolume:.4f} | elapsed {_dur(self.elapsed_s)} | ETA {_dur(eta) if eta is not None else '-'}")

    @property
    def log_key(self) -> tuple:
        """What a log line is printed for: a finished trial or a finished epoch (not a mere start)."""
        return self.done, tuple(sorted((r.trial, r.epochs_done) for r in self.running if r.epochs_done))


def _dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Ticking:
    """A status line that ages while rich redraws it, so running trials' times move between reports."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.at = time.monotonic()

    def __rich__(self) -> Text:
        if self.status is None:
            return Text("starting...")
        return Text(self.status.aged(time.monotonic() - self.at).line())


class Progress:
    def __init__(self, *, live: bool | None = None):
        self.console = Console(stderr=True)
        self.live_mode = sys.stderr.isatty() if live is None else live
        self._live: Live | None = None
        self._line = _Ticking()
        self._last_key: tuple | None = None

    def __enter__(self) -> "Progress":
        if self.live_mode:
            self._live = Live(self._line, console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, status: Status) -> None:
        self._line.status, self._line.at = status, time.monotonic()
        if self._live is None and status.log_key != self._last_key:
            # a log, not a display: a line per finished trial or trial-epoch
            self._last_key = status.log_key
            print(f"[cspnas] {status.line()}", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        self.console.print(message)
