"""The package's layers, read from its source: no import cycle between modules (top-level
and function-local imports alike), the objectives depend on nothing but torch and the
standard library (and the two leaf modules every layer raises through), and the package
root holds the entry points and a few modules only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "riskalign"
ENTRY_POINTS = {"train", "evaluate", "pairs", "frontier", "merge"}
# Importable by every layer: they import nothing of riskalign's but each other.
LEAVES = {"riskalign.errors", "riskalign.config.fields", "riskalign.config",
          "riskalign.config.differences"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imported(name: str, path: Path | None = None) -> set[str]:
    """Every name a module imports anywhere in its body (functions too), absolute."""
    path = path or MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names = {f"{module}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= set(MODULES):  # `from package import submodule` needs the submodule
                found.add(module)
    return found


def _edges(name: str) -> set[str]:
    """The riskalign modules `name` imports (a package's __init__ counts as a module)."""
    return {target for target in _imported(name) if target in MODULES and target != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = {name: _edges(name) for name in MODULES}
    assert _cycles(graph) == []


def test_function_local_and_relative_imports_count(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("import math\n\ndef f():\n    from omegaconf import OmegaConf\n"
                      "    from .functional import LINKS\n")
    found = _imported("riskalign.objectives.probe", module)
    assert {"omegaconf", "riskalign.objectives.functional.LINKS"} <= found
    assert _outside_dependencies("riskalign.objectives.probe", module) == {
        "omegaconf", "omegaconf.OmegaConf"}


def _outside_dependencies(name: str, path: Path | None = None) -> set[str]:
    """What a module imports beyond the standard library, torch and its own package."""
    allowed = set(sys.stdlib_module_names) | {"torch", "__future__"}
    own = name.split(".")[:2]
    return {target for target in _imported(name, path)
            if target.split(".")[0] not in allowed
            and target.split(".")[:2] != own
            and not any(target == leaf or target.startswith(leaf + ".") for leaf in LEAVES)}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("riskalign.objectives")))
def test_objectives_import_only_torch_and_the_standard_library(name):
    assert _outside_dependencies(name) == set()


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_the_leaves_import_only_the_standard_library_and_each_other(name):
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    riskalign = {target for target in _imported(name) if target.startswith("riskalign")}
    assert all(target.split(".")[0] in stdlib or target.startswith("riskalign")
               for target in _imported(name))
    assert all(any(target == leaf or target.startswith(leaf + ".") for leaf in LEAVES)
               for target in riskalign)


def test_the_root_holds_the_entry_points_and_at_most_three_modules():
    root = {path.stem for path in PACKAGE.glob("*.py")}
    assert ENTRY_POINTS <= root
    assert len(root - ENTRY_POINTS) <= 3, sorted(root - ENTRY_POINTS)


# The package's layers, lowest first: a module imports only from its own package or from a
# lower layer. The leaves sit below everything; the entry points (and the package's
# __init__, which registers the config resolvers) above.
LAYERS = [
    {"riskalign.errors", "riskalign.config.fields", "riskalign.config.differences",
     "riskalign.config"},
    {"objectives", "runs"},  # the math; files a run writes
    {"data"},  # datasets in the standard columns, batches
    {"models"},  # loading, references, sampling, response log-probs
    {"rewards"},
    {"evaluation", "worlds"},  # measurements; the embedded world
    {"modules", "reports"},  # LightningModules; sweep reports
    {"training"},  # the Lightning glue around the modules
    {"config"},  # every check, run before anything heavy loads
    {"recipes"},  # a run assembled from its checked config
    {"entry"},  # train, evaluate, pairs, frontier, merge; riskalign/__init__
]


def _unit(name: str) -> str:
    """The layer unit a module belongs to: a leaf, its subpackage, or `entry`."""
    if name in LAYERS[0]:
        return name
    parts = name.split(".")
    is_package = MODULES[name].name == "__init__.py"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and is_package) else "entry"


def _layer_of(unit: str) -> int:
    return next(depth for depth, units in enumerate(LAYERS) if unit in units)


def _upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a unit in its own layer or above (its own unit excepted)."""
    found = []
    for name, targets in edges.items():
        unit = _unit(name)
        for target in sorted(targets):
            other = _unit(target)
            upward = _layer_of(other) > _layer_of(unit) or (
                _layer_of(other) == _layer_of(unit) > 0)  # the leaves may use each other
            if other != unit and upward:
                found.append(f"{name} -> {target}")
    return found


def test_every_module_is_in_a_layer():
    for name in MODULES:
        _layer_of(_unit(name))  # StopIteration names a package no layer holds


def test_modules_import_only_from_lower_layers():
    assert _upward_imports({name: _edges(name) for name in MODULES}) == []


def test_an_upward_import_is_found():
    edges = {"riskalign.models.loading": {"riskalign.training.trainer", "riskalign.errors"},
             "riskalign.evaluation.drift": {"riskalign.worlds.settings"}}
    assert _upward_imports(edges) == [
        "riskalign.models.loading -> riskalign.training.trainer",
        "riskalign.evaluation.drift -> riskalign.worlds.settings",
    ]
