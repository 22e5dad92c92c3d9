"""Run a CLI command in its own process group, with a time limit, and kill the whole group after.

Searches start Ray daemons; killing the group removes whatever they left behind, and a hung
search fails its test with the tail of stderr instead of wedging the suite.
"""
from __future__ import annotations

import os
import signal
import subprocess

import pytest


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_in_group(cmd: list[str], *, timeout: float, what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion (or fail the test after ``timeout`` s, naming ``what`` hung)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout} s: {err[-2000:]}")
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
