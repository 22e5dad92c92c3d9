"""Latency backends: how a model's forward pass is timed (torch eager today; a deploy runtime next).

A backend is a small class with a `name`, `describe(settings)` (what produced the numbers:
name, library versions, options; stored with every latency) and `measure(model, settings)`.
`LatencySettings.backend` picks one by name; add one with `@register_latency_backend`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cspnas.errors import CspnasError

if TYPE_CHECKING:
    from torch import nn

    from cspnas.cost.settings import LatencySettings


@dataclass(frozen=True)
class Timing:
    """What a backend measured: median and IQR of the per-call time, timed calls, the noise flag."""

    median_ms: float
    iqr_ms: float
    runs: int
    noisy: bool


class LatencyBackend(ABC):
    """Times the forward pass of a model under LatencySettings (device, batch, dtype, threads, ...).

    `measure` must leave the caller's model untouched, take at least 4 timed samples, and raise
    CspnasError (one line: what failed, what to do) for an input or device it cannot run.
    """

    name: ClassVar[str]

    @abstractmethod
    def describe(self, settings: LatencySettings) -> dict[str, Any]:
        """{"name": ..., library versions, options}: stored next to every latency it measures."""

    @abstractmethod
    def measure(self, model: nn.Module, settings: LatencySettings) -> Timing:
        """Median forward latency of `model` as deployed under `settings`."""


# name -> backend class, or "module:Class" for a built-in one (imported when first used, so
# settings can be checked without importing torch)
LATENCY_BACKENDS: dict[str, type[LatencyBackend] | str] = {"torch": "cspnas.cost.latency:TorchEagerBackend"}


def register_latency_backend(cls: type[LatencyBackend]) -> type[LatencyBackend]:
    """Class decorator: make a backend selectable as LatencySettings(backend=cls.name)."""
    known = LATENCY_BACKENDS.get(cls.name)
    if known is not None and known is not cls and known != f"{cls.__module__}:{cls.__qualname__}":
        raise ValueError(f"latency backend {cls.name!r} is already registered by {known}")
    LATENCY_BACKENDS[cls.name] = cls
    return cls


def check_latency_backend(name: str) -> None:
    if name not in LATENCY_BACKENDS:
        raise CspnasError(f"unknown latency backend {name!r}; choose one of {', '.join(sorted(LATENCY_BACKENDS))} "
                          "(a new one is a LatencyBackend registered in cspnas/cost/)")


def latency_backend(name: str) -> LatencyBackend:
    check_latency_backend(name)
    cls = LATENCY_BACKENDS[name]
    if isinstance(cls, str):
        import importlib

        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls()
