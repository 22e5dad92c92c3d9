"""Live search status: a rich status line on a terminal, one plain line per event elsewhere."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.text import Text


@dataclass(frozen=True)
class Status:
    done: int
    budget: int
    running: int
    infeasible: int
    failed: int
    pruned: int
    best_accuracy: float | None
    front_size: int
    hypervolume: float
    elapsed_s: float

    def eta_s(self, started_done: int) -> float | None:
        new = self.done - started_done
        if new <= 0:
            return None
        return self.elapsed_s / new * (self.budget - self.done)

    def line(self, started_done: int = 0) -> str:
        eta = self.eta_s(started_done)
        best = f"{self.best_accuracy:.4f}" if self.best_accuracy is not None else "-"
        return (f"{self.done}/{self.budget} done | running {self.running} | infeasible {self.infeasible} | "
                f"failed {self.failed} | pruned {self.pruned} | best acc {best} | front {self.front_size} | "
                f"HV {self.hypervolume:.4f} | elapsed {_dur(self.elapsed_s)} | ETA {_dur(eta) if eta is not None else '-'}")


def _dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, *, live: bool | None = None, started_done: int = 0):
        self.console = Console(stderr=True)
        self.live_mode = sys.stderr.isatty() if live is None else live
        self.started_done = started_done
        self._live: Live | None = None
        self._last = ""
        self._t0 = time.monotonic()

    def __enter__(self) -> "Progress":
        if self.live_mode:
            self._live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, status: Status) -> None:
        line = status.line(self.started_done)
        if self._live is not None:
            self._live.update(Text(line))
        else:
            key = status.done  # a log, not a display: one line per finished trial
            if key != self._last:
                self._last = key
                print(f"[cspnas] {line}", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        self.console.print(message)
