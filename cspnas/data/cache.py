"""Decode-once cache: decoded tensors as safetensors, invalidated when the source files change."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from cspnas.data.images import RawData
from cspnas.fsutil import write_atomic, writing
from cspnas.data.sources import Source

log = logging.getLogger(__name__)

# Bump when decoding changes (e.g. a new resize rule) so old caches are not trusted.
FORMAT_VERSION = 1


def fingerprint(source: Source) -> str:
    """Hash of every source file's relative path, size and modification time (no content reads)."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{source.name}".encode())
    root = str(source.location)
    for path in source.files:
        name = str(path)
        st = os.stat(name)
        rel = name[len(root):] if name.startswith(root) else name  # moving the folder keeps the key
        h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_path(cache_dir: Path, source: Source, image_size: int | None = None) -> Path:
    # One file per source location (and size): a changed source overwrites its entry instead of piling up.
    where = hashlib.sha256(str(Path(source.location).resolve()).encode()).hexdigest()[:12]
    size = "" if image_size is None else f"-{image_size}px"
    return cache_dir / "decoded" / f"{source.name}-{where}{size}.safetensors"


def load_cached(path: Path, expected: str) -> RawData | None:
    """The cached RawData if ``path`` exists and was made from the same source files, else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != expected:
                return None
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    return RawData(tensors["train_x"], tensors["train_y"], tensors.get("test_x"), tensors.get("test_y"),
                   tuple(json.loads(meta["classes"])))


def save_cached(path: Path, fp: str, raw: RawData) -> None:
    """Write atomically (write_atomic) so a crash never leaves a half-written cache; CspnasError
    (full disk, read-only folder) if it cannot."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"train_x": raw.train_x, "train_y": raw.train_y}
    if raw.test_x is not None:
        tensors |= {"test_x": raw.test_x, "test_y": raw.test_y}
    write_atomic(path, save({k: v.contiguous() for k, v in tensors.items()},
                            metadata={"fingerprint": fp, "classes": json.dumps(list(raw.classes))}))
