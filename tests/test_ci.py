"""CI runs what the README tells a user to run, and the extra it names holds what the tests use.

``.ci/run`` reads its commands from README.md (``.ci/readme.py``): the opening block's two
commands verbatim, then the documented docs build. These tests fail when the two drift apart:
when ``.ci/run`` installs anything itself (an extra the README does not name, a package, a pip
line), when the README's block is not the two commands CI expects, when CONTRIBUTING documents
another docs command, or when a test imports a package that ``pip install -e ".[test]"`` does
not install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from docs_site import readme_commands

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
ci_readme = readme_commands()


def extras(text: str) -> set[str]:
    return {x.strip() for m in re.findall(r"\.\[([^\]]+)\]", text) for x in m.split(",")}


def installs(text: str) -> list[str]:
    """Every line of a shell script that installs Python packages (comments left out)."""
    code = [line.split("#", 1)[0] for line in text.splitlines()]
    pattern = r"\b(pip3?|uv|conda|easy_install|pipx)\b[^\n]*\binstall\b|python3? -m pip\b"
    return [line.strip() for line in code if re.search(pattern, line)]


def drift(ci: str, readme: str) -> list[str]:
    """What ``ci`` installs beyond the README's opening block (as the project's hook checks)."""
    block = ci_readme.opening_commands(readme)
    more = sorted(extras(ci) - extras("\n".join(block)))
    return more + installs(ci)


def test_the_readme_opens_with_the_two_commands_ci_runs() -> None:
    install, tests = ci_readme.opening_commands(README)
    assert re.match(r'pip install torch==\d+\.\d+\.\d+ && pip install -e "\.\[test\]" && ', install)
    assert "logtrick train" in install
    assert tests.split("#")[0].strip() == "python -m pytest -q"
    assert "sphinx" in ci_readme.docs_command(README)


def test_ci_runs_the_readme_commands_and_installs_nothing_itself() -> None:
    assert drift(CI, README) == []
    assert "readme.py opening" in CI and "readme.py docs" in CI
    assert "pytest" not in CI.replace("pytest's", "")  # the README's command runs the tests


def test_the_drift_check_sees_an_extra_or_a_pip_line_the_readme_lacks() -> None:
    old = 'python -m pip install -q torch==2.13.0\npython -m pip install -q -e ".[test,docs]"\n'
    assert drift(old, README)[0] == "docs"
    assert drift("pip install wandb  # logging\n", README) == ["pip install wandb"]
    assert drift('uv pip install -e ".[test]"\n', README) == ['uv pip install -e ".[test]"']
    assert drift("# pip install nothing\npython -m mypy src\n", README) == []


def test_contributing_documents_the_readme_commands() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    command = ci_readme.docs_command(contributing).split("#")[0].strip()
    assert command == ci_readme.docs_command(README).split("#")[0].strip()
    assert extras(contributing) <= {"test", "docs"}, extras(contributing)


# ------------------------------------------------- the test extra holds what the tests import

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCAL = {path.stem for path in (ROOT / "tests").rglob("*.py")}
"""The tests' own helper modules (``from stats import ...``): not packages to install."""


def closure(requirements: list[str], extras_of_self: dict[str, list[str]]) -> set[str]:
    """Names of the distributions these requirements install, dependencies included."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name == "logtrick":
            todo += [Requirement(r) for e in req.extras for r in extras_of_self[e]]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen |= {key, name}
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in map(Requirement, requires):
            if spec.marker is None or any(
                spec.marker.evaluate({"extra": e}) for e in [*req.extras, ""]
            ):
                todo.append(spec)
    return {n for n in seen if "[" not in n}


def imported_packages(folder: Path) -> dict[str, str]:
    """Top-level modules the tests import (``import``, ``from``, ``importorskip``) -> a file."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "importorskip"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_the_test_extra_installs_every_package_the_tests_import() -> None:
    extras_of_self = PYPROJECT["optional-dependencies"]
    installed = closure([*PYPROJECT["dependencies"], *extras_of_self["test"]], extras_of_self)
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in imported_packages(ROOT / "tests").items():
        if module in sys.stdlib_module_names or module in LOCAL or module == "logtrick":
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & installed:
            missing[module] = where
    assert not missing, f"imported by the tests but not installed by .[test]: {missing}"


@pytest.mark.parametrize("extra", ["distributed", "llm", "video", "docs"])
def test_the_test_extra_includes_the_feature_extras(extra: str) -> None:
    """Every optional feature is tested by the README's install: the test extra includes it."""
    test = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["test"]]
    assert any(r.name == "logtrick" and extra in r.extras for r in test), extra
