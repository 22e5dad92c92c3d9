"""Named implementations of one interface (latency backends, candidate evaluators): one small
registry, so a new implementation is a registered class and a bad name is one line that lists
the choices and says where a new one goes."""
from __future__ import annotations

import importlib
from typing import Any

from cspnas.errors import CspnasError


class Registry(dict):
    """name -> class, or "module:Class" for a built-in one, imported when first used (so settings
    can be checked without importing torch)."""

    def __init__(self, kind: str, where: str, builtins: dict[str, str] | None = None):
        super().__init__(builtins or {})
        self.kind, self.where = kind, where  # e.g. "latency backend", "a LatencyBackend registered in cspnas/cost/"

    def register(self, cls: type) -> type:
        """Class decorator: make `cls` selectable by its `name`."""
        known = self.get(cls.name)
        if known is not None and known is not cls and known != f"{cls.__module__}:{cls.__qualname__}":
            raise ValueError(f"{self.kind} {cls.name!r} is already registered by {known}")
        self[cls.name] = cls
        return cls

    def check(self, name: str) -> None:
        if name not in self:
            raise CspnasError(f"unknown {self.kind} {name!r}; choose one of {', '.join(sorted(self))} "
                              f"(a new one is {self.where})")

    def create(self, name: str) -> Any:
        self.check(name)
        cls = self[name]
        if isinstance(cls, str):
            module, _, attr = cls.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        return cls()
