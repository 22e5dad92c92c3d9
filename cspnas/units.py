"""Parse and format the quantities users type: durations (8ms, 500us), counts (300M, 1.2G), sizes (4MB)."""
from __future__ import annotations

import math
import re

from cspnas.errors import CspnasError

# Milliseconds per unit. A bare number is not accepted: "8" could be ms or s.
_DURATION_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
# Decimal SI multipliers (MACs and parameter counts are quoted this way in papers).
_COUNT_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}

# Bytes per unit: decimal (kB, MB, GB) as disks and papers quote them, binary (KiB, MiB, GiB) too.
_BYTE_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?"
_DURATION_RE = re.compile(rf"^\s*{_NUMBER}\s*([a-zµ]+)\s*$", re.IGNORECASE)
_COUNT_RE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]?)\s*$", re.IGNORECASE)
_BYTES_RE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]*)\s*$", re.IGNORECASE)


def _number(mantissa: str, exponent: str | None) -> float:
    return float(mantissa + (f"e{exponent}" if exponent else ""))


def parse_duration_ms(text: str | float | int) -> float:
    """'8ms' -> 8.0, '500us' -> 0.5, '0.01s' -> 10.0; numbers (not str) are taken as ms already."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _DURATION_RE.match(str(text))
        unit = match.group(3).lower() if match else None
        if match is None or unit not in _DURATION_UNITS:
            raise CspnasError(f"cannot read duration {text!r}; write a number with a unit, e.g. 8ms, 500us or 0.01s")
        value = _number(match.group(1), match.group(2)) * _DURATION_UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise CspnasError(f"duration {text!r} must be positive, e.g. 8ms")
    return value


def _parse_scaled(text: str | int | float, pattern, units: dict[str, float], kind: str, how: str, example: str) -> int:
    """A positive whole quantity written as a number with an optional unit suffix (counts, bytes)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = pattern.match(str(text))
        if match is None or match.group(3).lower() not in units:
            raise CspnasError(f"cannot read {kind} {text!r}; write a number {how}")
        value = _number(match.group(1), match.group(2)) * units[match.group(3).lower()]
    if not math.isfinite(value) or value <= 0:
        raise CspnasError(f"{kind} {text!r} must be positive, e.g. {example}")
    return int(round(value))


def parse_count(text: str | int | float) -> int:
    """'300M' -> 300_000_000, '5M' -> 5_000_000, '1.2G' -> 1_200_000_000, '12k' -> 12_000, '1000' -> 1000."""
    return _parse_scaled(text, _COUNT_RE, _COUNT_UNITS, "count",
                         "with an optional k/M/G suffix, e.g. 300M or 1.2G", "300M")


def parse_bytes(text: str | int | float) -> int:
    """'4MB' -> 4_000_000, '4MiB' -> 4_194_304, '512kB' -> 512_000, '1000' -> 1000 (bytes)."""
    return _parse_scaled(text, _BYTES_RE, _BYTE_UNITS, "size", "with a unit, e.g. 4MB, 512kB or 2MiB", "4MB")


def format_bytes(value: float | int | None) -> str:
    """4_194_304 -> '4.19 MB' (decimal, as parse_bytes reads it); None/NaN -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    for suffix, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f} B"


def format_count(value: float | int | None) -> str:
    """12_345_678 -> '12.3M'; the inverse of parse_count up to rounding; None/NaN -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}" if abs(value) / scale < 100 else f"{value / scale:.0f}{suffix}"
    return f"{value:.0f}"


def format_duration_ms(value: float | None) -> str:
    """A latency in ms with a precision that suits its size; None/NaN -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    if value >= 1e-3:
        return f"{value * 1e3:.0f} us"
    return f"{value * 1e6:.0f} ns"  # only limits are this small (e.g. a deliberately impossible 1ns)
