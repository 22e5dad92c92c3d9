"""Bounded host memory for reused Ray workers: the worker hands its trials to a trainer process of its
own and replaces it by a fresh one after `--worker-trials` trials.

A reused worker's RSS creeps up by about 0.7 MB per trial even after every release (allocator and
library caches; README, Performance), which 16 packed workers on a long search cannot afford. Ray Tune
2.60 cannot retire a reused actor safely (an actor that exits while cached or being reset fails the
trial given to it), so the Ray worker stays and the training moves: the trainer (`python -m
cspnas.search.worker FD`) runs `trainable.run_trial` for each trial it is sent and streams every result
back over a pipe; the worker reports it to Tune and acknowledges, so a trial reads exactly as one trained
in the worker. After its N-th trial ends the trainer is closed and a fresh one starts (importing while
the worker waits for its next trial); its pid is each trial's `worker_pid`. A trial that Tune stops
mid-way, or whose trainer dies, closes the trainer too: the next trial gets a fresh one, and a trainer
that died is reported to Tune as the worker dying would be (Ray's retry logic then applies).
"""
from __future__ import annotations

import json
import subprocess
import sys
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable


class Trainer:
    """One trainer process and the worker's end of its pipe."""

    def __init__(self) -> None:
        ours, theirs = Pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "cspnas.search.worker", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),))
        theirs.close()
        self.conn: Connection = ours
        self.trials = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, *, now: bool = False) -> None:
        """End the trainer: an idle one sees EOF and exits; one mid-trial (`now`) is killed at once, as Tune
        gives a stopped trial's thread 2 s (the ledger drops a dead process's entry, its flocks go with it)."""
        if now:
            self.proc.kill()
        self.conn.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_TRAINER: Trainer | None = None  # this worker's trainer, kept across the trials Tune gives the worker


def run_in_trainer(config: dict[str, Any], emit: Callable[[dict], None]) -> None:
    """Run one trial in this worker's trainer (a fresh one when none is alive), emitting its results."""
    global _TRAINER
    if _TRAINER is None or not _TRAINER.alive():
        _TRAINER = Trainer()
    trainer, ended = _TRAINER, False
    trainer.trials += 1
    try:
        trainer.conn.send_bytes(json.dumps(config).encode())
        while True:
            try:
                message = json.loads(trainer.conn.recv_bytes())
            except (EOFError, OSError):
                code = trainer.proc.wait()
                raise RuntimeError(f"the worker's trainer process {trainer.proc.pid} died during trial "
                                   f"{config['trial']} (exit code {code})") from None
            if message.get("end"):
                ended = True
                return
            emit(message["result"])  # Tune may stop the trial here (SystemExit): the trainer goes below
            trainer.conn.send_bytes(b"ok")
    finally:
        if not ended or trainer.trials >= int(config["worker_trials"]):
            trainer.close(now=not ended)
            _TRAINER = Trainer() if ended else None  # recycled: the next one imports while we wait


def serve(fd: int) -> None:
    """The trainer's loop: a trial's config in, its results out (each acknowledged), until EOF."""
    from cspnas.search.trainable import run_trial

    conn = Connection(fd)

    def emit(result: dict) -> None:
        conn.send_bytes(json.dumps({"result": result}).encode())
        conn.recv_bytes()  # the worker reported it to Tune

    while True:
        try:
            config = json.loads(conn.recv_bytes())
        except EOFError:
            return
        run_trial(config, emit)
        conn.send_bytes(json.dumps({"end": True}).encode())


if __name__ == "__main__":
    try:
        serve(int(sys.argv[1]))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the worker went away mid-trial
        pass
