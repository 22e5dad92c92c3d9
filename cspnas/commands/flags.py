"""Flags whose default and help text come from a settings dataclass: one source for every default.

argparse's own default is None ("not given"), so the command passes on only what was given
and the dataclass fills in the rest; the help text shows the dataclass's default.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any


def setting_default(owner: Any, name: str) -> Any:
    """The default of field `name` of dataclass `owner` (a class), or its value (an instance)."""
    if not isinstance(owner, type):
        return getattr(owner, name)
    f = _field(owner, name)
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def add_setting(parser: argparse.ArgumentParser, flag: str, owner: Any, name: str | None = None,
                **kwargs: Any) -> None:
    """Add `flag` for field `name` (default: the flag's name) of `owner`, a settings dataclass or an
    instance holding the defaults that apply; `help=` overrides the field's own help text."""
    name = name or flag.lstrip("-").replace("-", "_")
    text = kwargs.pop("help", None) or _field(owner, name).metadata.get("help", "")
    default = setting_default(owner, name)
    if default is not None and not isinstance(default, bool):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default  # as typed
        text = f"{text} (default {shown})"
    parser.add_argument(flag, dest=kwargs.pop("dest", name), default=None, help=text.replace("%", "%%"), **kwargs)


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags among `names` that were given on the command line."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _field(owner: Any, name: str):
    for f in fields(owner):
        if f.name == name:
            return f
    raise KeyError(f"{type(owner).__name__ if not isinstance(owner, type) else owner.__name__} has no field {name!r}")
