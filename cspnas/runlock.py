"""One search per run folder: RUN/.lock, held for the whole search, names its holder.

The lock itself is an flock on RUN/.lock, so the kernel drops it when its process dies, however
it dies. The file's content names the holder (host, pid, process start time, and the pids of the
local Ray session it started), so a refusal can say who holds the run, and the next search can
end the Ray processes a killed driver left behind (see search/leftovers.py). A recorded holder is taken
over only when it is provably dead: on this host, its pid is gone or now belongs to a process
that started at another time. A holder on another host cannot be checked from here, so its lock
is never taken over automatically; the message says how to remove it.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

from cspnas.errors import CspnasError

LOCK_FILE = ".lock"


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # someone else's process: it exists, its start time is unknown
        return -1.0


def same_process(pid: int, started: float) -> bool:
    """Whether `pid` is still the process that started at `started` (not a reused pid)."""
    now = process_start_time(pid)
    return now is not None and (now == -1.0 or abs(now - started) < 0.05)


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # the process's start time, to tell a reused pid from the holder
    ray: tuple[tuple[int, float], ...] = field(default=())  # (pid, start time) of its local Ray processes
    command: str = "search"  # what holds the run: "search" or "finalize" (`cspnas finalize`)

    @classmethod
    def me(cls, command: str = "search") -> "Holder":
        return cls(host=socket.gethostname(), pid=os.getpid(), started=process_start_time(os.getpid()) or 0.0,
                   command=command)

    def describe(self) -> str:
        since = dt.datetime.fromtimestamp(self.started).isoformat(sep=" ", timespec="seconds")
        what = "a search" if self.command == "search" else f"`cspnas {self.command}`"
        return f"{what} on {self.host} (pid {self.pid}, started {since})"

    def is_dead(self) -> bool | None:
        """True / False on this host; None for another host, where it cannot be checked."""
        if self.host != socket.gethostname():
            return None
        return not same_process(self.pid, self.started)


def _parse(text: str) -> Holder | None:
    try:
        d = json.loads(text)
        return Holder(host=str(d["host"]), pid=int(d["pid"]), started=float(d["started"]),
                      ray=tuple((int(p), float(s)) for p, s in d.get("ray", ())),
                      command=str(d.get("command", "search")))
    except (ValueError, KeyError, TypeError):
        return None


class RunLock:
    """`with RunLock(run_dir) as lock:` holds RUN for one search; `lock.previous` is the dead holder
    it took over (None when the run was free), whose Ray leftovers the caller may end."""

    def __init__(self, run_dir: Path, command: str = "search"):
        self.run_dir, self.command = Path(run_dir), command
        self.path = self.run_dir / LOCK_FILE
        self.previous: Holder | None = None
        self._fd: int | None = None
        self._holder: Holder | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse(os.pread(fd, 65536, 0).decode(errors="replace"))
                who = holder.describe() if holder is not None else "another search or finalize"
                raise CspnasError(f"{self.run_dir} is in use by {who}; wait for it to end or stop it "
                                  "(Ctrl-C) before resuming") from None
            text = os.pread(fd, 65536, 0).decode(errors="replace").strip()
            recorded = _parse(text) if text else None
            if recorded is not None:
                dead = recorded.is_dead()
                if dead is None:
                    raise CspnasError(
                        f"{self.run_dir} is locked by {recorded.describe()}, which cannot be checked from "
                        f"{socket.gethostname()}; if that search is no longer running, delete {self.path} "
                        "and resume again")
                if not dead:  # alive yet not holding the flock: a filesystem without flock; stay safe
                    raise CspnasError(f"{self.run_dir} is in use by {recorded.describe()}; wait for it to end "
                                      "or stop it (Ctrl-C) before resuming")
                self.previous = recorded
            self._fd = fd
            self._write(Holder.me(self.command))
            return self
        except BaseException:
            if self._fd is None:
                os.close(fd)  # closing drops the flock too
            raise

    def record_ray(self, processes: tuple[tuple[int, float], ...]) -> None:
        """Name the local Ray session's processes in the lock, for the next search to end if we die."""
        assert self._holder is not None
        if processes != self._holder.ray:
            self._write(replace(self._holder, ray=processes))

    def _write(self, holder: Holder) -> None:
        data = json.dumps({**asdict(holder), "ray": [list(p) for p in holder.ray]}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        self._holder = holder

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file is a free run
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_holder(run_dir: Path) -> Holder | None:
    """Who holds RUN now (a search or finalize), judged by the recorded holder (readers never take the
    lock); None when it is free. A holder on another host counts as alive: it cannot be checked from here."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    holder = _parse(text) if text else None
    return holder if holder is not None and holder.is_dead() is not True else None


def search_is_running(run_dir: Path) -> bool:
    """Whether a search (or finalize) holds RUN now."""
    return live_holder(run_dir) is not None
