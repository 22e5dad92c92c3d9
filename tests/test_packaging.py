"""Every third-party module the product imports is installed by `pip install cspnas` itself, not
only by the test extra (a fresh install once could not search: the run lock needed psutil)."""
import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _installed_by(names: set[str]) -> set[str]:
    """`names` and everything they require (without extras), as pip would install it."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_every_imported_package_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = _installed_by({_name(r) for r in project["dependencies"]})
    dists = metadata.packages_distributions()
    missing = {}
    for path in (REPO / "cspnas").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for module in modules:
                top = module.split(".")[0]
                if top == "cspnas" or top in sys.stdlib_module_names:
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not owners & installed:
                    missing.setdefault(top, str(path.relative_to(REPO)))
    assert not missing, f"imported but not installed by the project's dependencies: {missing}"
