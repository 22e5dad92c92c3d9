"""Writing user-visible files: atomically, with the modes the umask gives, and with one clear
line (a CspnasError) when the disk is full, the folder read-only, or a file in the way.

Everything is written from bytes in memory through `write_atomic`: torch's and safetensors'
own file writers abort the whole process (a C++ `terminate`) on a full disk instead of raising.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cspnas.errors import CspnasError, DiskFullError

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
IN_THE_WAY = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY})


def write_error(e: OSError, path: str | Path) -> CspnasError:
    """The one line for an OSError met while writing `path` (a file or the folder being made)."""
    if e.errno in DISK_FULL:
        return DiskFullError(f"disk full writing {path}: free space and re-run")
    if e.errno in NOT_WRITABLE:
        return CspnasError(f"cannot write {path} ({e.strerror}): its folder is read-only for this user; "
                           "make it writable or write somewhere else")
    if e.errno in IN_THE_WAY:
        return CspnasError(f"cannot write {path} ({e.strerror}): a file or folder is in the way; "
                           "move it or write somewhere else")
    return CspnasError(f"cannot write {path} ({e.strerror or e}); check the disk and re-run")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Any OSError raised inside becomes `write_error(e, path)`."""
    try:
        yield
    except OSError as e:
        raise write_error(e, path) from e


def _hidden_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(3)}")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` next to `path` and rename it over `path`: a reader sees the old file or the new
    one, never half of one, and a failure (full disk, Ctrl-C) leaves no temporary file behind.
    The file's mode is 0666 less the umask, like any file the user's own tools create."""
    path = Path(path)
    tmp = _hidden_sibling(path, "tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with writing(path):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the bytes do
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def check_writable_dir(folder: str | Path, label: str) -> None:
    """Refuse, before any work, a folder to write in (or the nearest existing parent it would be made
    in) that is a file or not writable by this user; `label` names it in the message (e.g. the flag
    and its value). Nothing is written: access(2) answers for read-only mounts, immutable folders
    and permissions alike, for root too."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CspnasError(f"{label}: {existing} is a file, not a folder; pass a folder or move the file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CspnasError(f"{label}: {existing} is read-only for this user; make it writable or pass a writable "
                          "folder")


@contextmanager
def staged_dir(target: str | Path, staging: Path | None = None) -> Iterator[Path]:
    """Build the folder `target` under a hidden sibling name and rename it into place only when the
    block succeeds, so `target` appears whole or not at all; on any error the staging folder is
    removed. `target` must not exist or be an empty folder (it is never overwritten). Pass
    `staging` to name the folder yourself (it is then created if missing and kept on error: the
    caller decides what survives). Modes follow the umask."""
    target = Path(target)
    keep = staging is not None
    staging = staging if staging is not None else _hidden_sibling(target, "creating")
    with writing(target):
        staging.mkdir(parents=True, exist_ok=keep)
    try:
        yield staging
        with writing(target):
            os.rename(staging, target)  # replaces an empty folder, fails on anything else
    except BaseException as e:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in DISK_FULL):
            # name the folder the user asked for, not the hidden staging file that hit the limit
            raise write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target) from e
        raise
