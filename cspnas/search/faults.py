"""Fault injection for crash tests: `CSPNAS_KILL_AT=point[:n]` SIGKILLs the driver at the
n-th (default 1st) time it reaches `point`. Unset (always, outside tests) it costs one dict
lookup. Points: after_config, trial_started, trial_told, between_tables, finishing."""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    spec = os.environ.get("CSPNAS_KILL_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
