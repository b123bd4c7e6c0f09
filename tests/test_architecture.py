"""The import graph of ``src/logtrick`` has no cycles.

Every ``import`` and ``from ... import`` of a logtrick module counts, at the top of a module or
inside a function (a lazy import is still a dependency: it only moves the failure to run time).
``from logtrick.rl import config`` names the submodule ``logtrick.rl.config``; ``from
logtrick.rl import Agent`` names the package ``logtrick.rl`` (its ``__init__``). Left out: imports
under ``if TYPE_CHECKING:`` (never run; annotations only), and the implicit import of the parent
packages that importing any submodule performs (every module of ``rl/`` would otherwise sit in
a cycle with ``rl/__init__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "logtrick"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    return {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, nested ones included, but not the body of an
    ``if TYPE_CHECKING:`` block (its ``else`` branch runs, so it counts)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from ... import`` starts from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The logtrick modules ``module`` imports (submodules named by ``from X import y``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            origin = _absolute(module, node, path.name == "__init__.py")
            names = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        for name in names:
            while name and name not in known:  # `import logtrick.rl.x` of a name inside x
                name = name.rpartition(".")[0]
            if name.split(".")[0] == ROOT and name != module:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_import_graph_has_no_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b", "c"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"x": {"x"}}, ["x", "x"]),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_the_walk_sees_lazy_submodule_and_relative_imports(tmp_path: Path) -> None:
    """A lazy import inside a function counts, ``from pkg import sub`` names the submodule,
    ``TYPE_CHECKING`` imports do not count (their ``else`` does)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from logtrick.rl import config, Agent\n"
        "from . import loop\n"
        "if TYPE_CHECKING:\n    from logtrick.rl import agent\n"
        "else:\n    import logtrick.rl.envs\n"
        "def f():\n    from logtrick.rl.workers import RayCollector\n"
    )
    path = tmp_path / "build.py"
    path.write_text(source)
    known = {
        "logtrick.rl",
        "logtrick.rl.config",
        "logtrick.rl.loop",
        "logtrick.rl.agent",
        "logtrick.rl.envs",
        "logtrick.rl.workers",
    }
    found = imports_of("logtrick.rl.build", path, known)
    expected = {"logtrick.rl.config", "logtrick.rl", "logtrick.rl.loop", "logtrick.rl.envs"}
    assert found == expected | {"logtrick.rl.workers"}
    # and on the real package: the collector's lazy import of the Ray workers is an edge
    assert "logtrick.rl.workers" in import_graph()["logtrick.rl.build"]
