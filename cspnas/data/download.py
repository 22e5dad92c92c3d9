"""Fetching one file over HTTP into place, atomically, or failing with a fix-it message."""
from __future__ import annotations

import logging
import os
import shutil
import urllib.request
from pathlib import Path

from cspnas.errors import CspnasError
from cspnas.fsutil import DISK_FULL, NOT_WRITABLE, write_error

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0  # per socket operation, not for the whole file


def fetch(url: str, dest: Path, *, timeout: float = TIMEOUT_S) -> None:
    """Download ``url`` to ``dest`` via a ``.part`` file so an interrupted download never looks done."""
    tmp = dest.with_name(dest.name + ".part")
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            # only once the server answered: a failed download leaves no empty folders behind
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, ValueError) as exc:  # URLError and socket timeouts are OSErrors
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL | NOT_WRITABLE:  # our side, not the server's
            raise write_error(exc, dest) from exc
        raise CspnasError(f"could not download {url} ({exc}); download it yourself and save it as {dest}") from exc
    os.replace(tmp, dest)
