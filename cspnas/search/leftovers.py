"""Ray processes a killed driver left behind (its GCS, raylet, agents, workers keep running after a
SIGKILL): recorded in RUN/.lock while searching, ended by the next search of that run.

A recorded process is ended only when its pid still belongs to the process that started at the
recorded time, so a reused pid (an unrelated process) is never touched.
"""
from __future__ import annotations

import time

import psutil

from cspnas.runlock import Holder


def is_ray_process(cmdline: list[str]) -> bool:
    """Ray's daemons run from its package (gcs_server, raylet, log_monitor.py...); its workers and
    agents rename themselves `ray::...`."""
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any("/ray/" in part for part in cmdline[:2]))


def local_ray_processes() -> tuple[tuple[int, float], ...]:
    """(pid, start time) of this driver's local Ray session: its descendant processes that are Ray's."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if is_ray_process(p.cmdline()):
                out.append((p.pid, p.create_time()))
        except psutil.Error:  # ended meanwhile, or not ours to read
            continue
    return tuple(sorted(out))


def _running(p: psutil.Process) -> bool:
    try:  # an ended process whose parent died first stays a zombie until init reaps it
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_leftovers(dead: Holder, timeout_s: float = 5.0) -> int:
    """End the recorded Ray processes of a dead holder that are still the same processes; how many."""
    procs = []
    for pid, started in dead.ray:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.05 and _running(p):
                procs.append(p)
        except psutil.Error:
            continue
    for signal_them in ("terminate", "kill"):
        alive = [p for p in procs if _running(p)]
        for p in alive:
            try:
                getattr(p, signal_them)()
            except psutil.Error:
                pass
        deadline = time.monotonic() + timeout_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if _running(p)]
    return len(procs)
