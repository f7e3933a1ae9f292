"""The import graph of fnsft points one way: a declared layering of its packages, and no cycle between modules.

Every ``import`` counts, including those inside functions (fnsft imports heavy libraries lazily, and a lazy
import is still a dependency). docs/ARCHITECTURE.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fnsft

ROOT = Path(fnsft.__file__).parent

#: Lowest first. A module may import from its own package or from a lower layer, never from its layer or above.
LAYERS: list[set[str]] = [
    {"fnsft", "fnsft.errors", "fnsft.console", "fnsft.atomic", "fnsft.hashing", "fnsft.names", "fnsft.quiet",
     "fnsft.resources", "fnsft.gguf_file"},
    {"fnsft.recipe", "fnsft.hub_access", "fnsft.paths"},
    {"fnsft.data", "fnsft.rundir", "fnsft.estimate"},
    {"fnsft.models"},
    {"fnsft.environment"},
    {"fnsft.manifest", "fnsft.migrate"},
    {"fnsft.mask"},
    {"fnsft.train", "fnsft.export"},
    {"fnsft.reproduce", "fnsft.hub"},
    {"fnsft.commands"},
    {"fnsft.cli"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _targets(module: str, path: Path) -> set[str]:
    """The fnsft modules a module imports anywhere in its body (``from pkg import submodule`` is the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules or {target})
    return {name for name in found if name == "fnsft" or name.startswith("fnsft.")}


GRAPH = {module: _targets(module, path) - {module} for module, path in MODULES.items()}


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_package_has_a_layer():
    assert {_unit(module) for module in MODULES} <= RANK.keys(), "place a new module or package in LAYERS"


def test_the_parser_sees_function_level_and_from_package_imports():
    """Guards the test itself: a lazy import and ``from pkg import submodule`` are both edges."""
    assert "fnsft.train.run" in GRAPH["fnsft.reproduce"]  # imported inside reproduce()
    assert "fnsft.recipe.roundtrip" in GRAPH["fnsft.recipe.versions"]  # from fnsft.recipe import roundtrip


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    wrong = sorted(
        target for target in GRAPH[module]
        if _unit(target) != _unit(module) and RANK[_unit(target)] >= RANK[_unit(module)]
    )
    assert not wrong, f"{module} (layer {RANK[_unit(module)]}) imports {wrong}: move the shared part down a layer"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
