"""Parsers for the official binary file formats of CIFAR and (Fashion-)MNIST."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import torch

from cspnas.errors import CspnasError

CIFAR_IMAGE_BYTES = 3 * 32 * 32


def parse_cifar_bin(blob: bytes, *, label_bytes: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a CIFAR binary batch: records of label byte(s) then 3072 pixel bytes (R, G, B planes).

    CIFAR-10 has one label byte; CIFAR-100 has a coarse and a fine label byte and we keep the
    fine (last) one. Returns uint8 [N, 3, 32, 32] images and int64 [N] labels.
    """
    record = label_bytes + CIFAR_IMAGE_BYTES
    if len(blob) == 0 or len(blob) % record:
        raise CspnasError(f"{source} is not a CIFAR binary file ({len(blob)} bytes is not a multiple "
                          f"of {record}); re-download it")
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, record)
    labels = torch.from_numpy(rows[:, label_bytes - 1].astype(np.int64))
    images = torch.from_numpy(rows[:, label_bytes:].copy()).view(-1, 3, 32, 32)
    return images, labels


def _maybe_gunzip(blob: bytes) -> bytes:
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def parse_idx(blob: bytes, *, source: str) -> torch.Tensor:
    """Decode an unsigned-byte IDX file (gzipped or not) into a uint8 tensor of its shape.

    Format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
    then one big-endian int32 per dimension, then the data.
    """
    blob = _maybe_gunzip(blob)
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise CspnasError(f"{source} is not an unsigned-byte IDX file (bad magic number); re-download it")
    ndim = blob[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}i", blob[4:header])
    expected = int(np.prod(shape))
    if len(blob) - header != expected:
        raise CspnasError(f"{source} is truncated or corrupt: header says {expected} bytes of data, "
                          f"found {len(blob) - header}; re-download it")
    return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8, offset=header).copy()).view(*shape)


def idx_images(blob: bytes, *, source: str) -> torch.Tensor:
    """IDX images [N, H, W] as uint8 [N, 1, H, W]."""
    x = parse_idx(blob, source=source)
    if x.ndim != 3:
        raise CspnasError(f"{source} should hold [N, H, W] images but has shape {tuple(x.shape)}; "
                          "check that images and labels files are not swapped")
    return x.unsqueeze(1)


def idx_labels(blob: bytes, *, source: str) -> torch.Tensor:
    """IDX labels [N] as int64."""
    y = parse_idx(blob, source=source)
    if y.ndim != 1:
        raise CspnasError(f"{source} should hold [N] labels but has shape {tuple(y.shape)}; "
                          "check that images and labels files are not swapped")
    return y.to(torch.int64)
