"""Ctrl-C and SIGTERM during a search: the first asks the search to stop, a second Ctrl-C forces it.

Asked to stop, the search proposes no new trial, Tune stops the running ones (`TuneStop`), they
are recorded as interrupted (re-queued on resume), and the command exits 128 + the signal number
with one line naming `cspnas search --resume RUN`. A full disk stops the search the same way
(`is_disk_full`), with its own line. The handlers are installed again after Ray started: Ray's
own SIGTERM handlers exit at once or dump a C++ stack and abort, and Tune's SIGINT handler
(turned off with TUNE_DISABLE_SIGINT_HANDLER) would print a `Tuner.restore` hint that does not
apply here.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

from cspnas.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resume_hint(run_dir: Path, signum: int) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(f"search stopped by {name}; continue it with `cspnas search --resume {run_dir}`", signum)


class StopRequest:
    """`with StopRequest() as stop:` catches SIGINT and SIGTERM in the main thread; `stop.signum` is
    the first signal received (None while none was). A second SIGINT raises KeyboardInterrupt
    inside `forcible()`.
    Call `install()` again after Ray started."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._forcible = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if signum == signal.SIGINT and self._forcible:  # the second Ctrl-C: stop now, whatever is running
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def forcible(self) -> Iterator[None]:
        """Where a second Ctrl-C may cut in (waiting on Tune); never while the records are written."""
        self._forcible = True
        try:
            yield
        finally:
            self._forcible = False

    def install(self) -> None:
        """Catch the signals (again: `ray.init` puts in its own SIGTERM handler)."""
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous.setdefault(s, signal.getsignal(s))
                signal.signal(s, self._handle)

    def __enter__(self) -> "StopRequest":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            # None: a handler installed outside Python (Ray's); the default is the safe choice
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def tune_stopper(should_stop: Callable[[], bool]):
    """A Tune Stopper that ends the experiment (every running trial) once `should_stop()`."""
    from ray.tune import Stopper

    class TuneStop(Stopper):  # no closure: Tune pickles its run config, and the search loop cannot travel
        def __init__(self, should_stop: Callable[[], bool]) -> None:
            self._should_stop = should_stop

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return self._should_stop()

        def __getstate__(self) -> dict:
            return {}

    return TuneStop(should_stop)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How a full disk reads once it went through SQLite, Optuna or a Ray worker's failure reason
DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded", "disk full")


def is_disk_full(what: BaseException | str) -> bool:
    """Whether an exception (or any exception it came from) or a trial's failure reason is a full disk."""
    if isinstance(what, str):
        return any(t in what.lower() for t in DISK_FULL_TEXT)
    seen: set[int] = set()
    e: BaseException | None = what
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if any(t in str(e).lower() for t in DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False
