"""A cross-process gate that pauses training while a latency measurement runs.

Latency measured while other trials train on the same cores (or GPU) is noisy and biased.
Trainers hold a shared lock on `work` and, between steps, peek at `turnstile`; the
measurer takes `turnstile` exclusively (so no trainer starts a new step), then `work`
exclusively (waits for running steps to end), measures, and releases both. flock locks
die with their process, so a crashed trainer can never wedge the search. Cost to a
trainer: one non-blocking flock per step.

The locks are per Ray node (`node`: a subfolder named by the node id), so a measurement pauses
only the trainers of the node it runs on, even where nodes share a file system (a loopback
cluster, NFS); the stop file is one per run and reaches every trainer that sees the run directory.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator


class SearchStopping(Exception):
    """Raised at a trainer's next step once the search was asked to stop (Ctrl-C, SIGTERM, full disk)."""


class TrainerPass:
    """A trainer's hold on the gate: `checkpoint()` between steps, `released()` around blocking calls."""

    def __init__(self, work: int, turn: int, before_pause: Callable[[], None] | None, stop: Path):
        self._work, self._turn, self._before_pause, self._stop = work, turn, before_pause, stop

    def enter(self) -> None:
        fcntl.flock(self._turn, fcntl.LOCK_SH)  # waits while a measurement is pending
        fcntl.flock(self._work, fcntl.LOCK_SH)
        fcntl.flock(self._turn, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        if self._stop.exists():  # without this, Tune's stop waits for the epoch to end (or 10 s, then kills)
            raise SearchStopping("the search is stopping")
        try:
            fcntl.flock(self._turn, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(self._turn, fcntl.LOCK_UN)
            return  # nobody is measuring
        except BlockingIOError:
            pass
        if self._before_pause is not None:
            self._before_pause()
        fcntl.flock(self._work, fcntl.LOCK_UN)
        self.enter()

    __call__ = checkpoint

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let measurements run while we block elsewhere (e.g. in tune.report, which waits for
        the driver, which may itself be waiting for this gate: holding it would deadlock)."""
        if self._before_pause is not None:
            self._before_pause()
        fcntl.flock(self._work, fcntl.LOCK_UN)
        try:
            yield
        finally:
            self.enter()


STOP_FILE = "stop"


class MeasureGate:
    def __init__(self, lock_dir: str | Path, node: str = ""):
        self.lock_dir = Path(lock_dir)
        self._locks = self.lock_dir / f"node-{node}" if node else self.lock_dir

    def _open(self, name: str) -> int:
        folder = self.lock_dir if name == STOP_FILE else self._locks
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)

    # -- trainer side ---------------------------------------------------------------------
    @contextlib.contextmanager
    def training(self, before_pause: Callable[[], None] | None = None) -> Iterator[TrainerPass]:
        """Hold the gate open for training; yields a TrainerPass (call it between steps).

        `before_pause` runs before yielding to a measurement (e.g. torch.cuda.synchronize,
        so queued GPU work does not overlap the measurement).
        """
        work, turn = self._open("work.lock"), self._open("turnstile.lock")
        trainer = TrainerPass(work, turn, before_pause, self.lock_dir / STOP_FILE)
        trainer.enter()
        try:
            yield trainer
        finally:
            fcntl.flock(work, fcntl.LOCK_UN)
            os.close(work)
            os.close(turn)

    # -- the driver: stopping the search ------------------------------------------------------
    def stop_training(self) -> None:
        """Make every trainer of this run stop at its next step."""
        try:
            os.close(self._open(STOP_FILE))
        except OSError:  # a full disk: Tune still stops the trials, only later
            pass

    def allow_training(self) -> None:
        """A new search of the run: a stop left by the previous one no longer applies."""
        (self.lock_dir / STOP_FILE).unlink(missing_ok=True)

    # -- measurer side --------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Block new training steps and wait for running ones; then the machine is ours."""
        work, turn = self._open("work.lock"), self._open("turnstile.lock")
        try:
            fcntl.flock(turn, fcntl.LOCK_EX)
            fcntl.flock(work, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(work, fcntl.LOCK_UN)
            fcntl.flock(turn, fcntl.LOCK_UN)
            os.close(work)
            os.close(turn)
