"""The package as users meet it: one version, the declared minimums tested, the entry points.

The minimum versions in ``pyproject.toml`` are the versions CI installs: Python from the machine
that runs ``.ci/run`` and the torch that ``.ci/run`` pins. A declared minimum that CI does not
test would be a promise nobody checks, so raising CI's versions means raising the minimums.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import torch

import logtrick

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def minimum(spec: str, name: str) -> tuple[int, ...]:
    """``(major, minor)`` of a ``>=X.Y`` requirement of ``name`` in ``spec``."""
    match = re.fullmatch(rf"{re.escape(name)}\s*>=\s*(\d+)\.(\d+)", spec.strip())
    if match is None:
        raise ValueError(f"{name}: expected a '>=X.Y' minimum, got {spec!r}")
    return int(match.group(1)), int(match.group(2))


def declared_torch() -> tuple[int, ...]:
    (spec,) = [d for d in PROJECT["dependencies"] if re.match(r"torch\b", d)]
    return minimum(spec, "torch")


def ci_torch() -> tuple[int, ...]:
    """The torch version ``.ci/run`` installs (``torch==X.Y.Z``)."""
    pins = re.findall(r"torch==(\d+)\.(\d+)\.\d+", (ROOT / ".ci" / "run").read_text())
    assert len(pins) == 1, f".ci/run: expected one torch==X.Y.Z pin, found {pins}"
    return int(pins[0][0]), int(pins[0][1])


def test_declared_torch_minimum_is_the_torch_ci_installs() -> None:
    assert declared_torch() == ci_torch(), (
        f"pyproject declares torch>={declared_torch()} but .ci/run tests {ci_torch()}"
    )


def test_running_versions_meet_the_declared_minimums() -> None:
    python = minimum(PROJECT["requires-python"], "")
    assert sys.version_info[:2] >= python
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= declared_torch()


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI runs on the declared minimums")
def test_ci_runs_the_declared_minimums() -> None:
    """Under CI (``CI`` set by the runner) the interpreter and torch are the minimums."""
    assert sys.version_info[:2] == minimum(PROJECT["requires-python"], "")
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) == declared_torch()


def test_minimum_parser_rejects_what_it_cannot_read() -> None:
    assert minimum(">=3.11", "") == (3, 11)
    assert minimum("torch >= 2.13", "torch") == (2, 13)
    with pytest.raises(ValueError, match=r"expected a '>=X\.Y' minimum"):
        minimum("torch>=2", "torch")


def test_the_version_is_written_once() -> None:
    """pyproject reads the version from ``logtrick/__init__.py``; nothing else states it."""
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "src/logtrick/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", logtrick.__version__)


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` with this checkout's sources first on the path."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_version_from_the_command_line() -> None:
    out = run_module("logtrick", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"logtrick {logtrick.__version__}"


@pytest.mark.slow
def test_python_dash_m_logtrick_runs_the_cli() -> None:
    out = run_module("logtrick", "presets")
    assert out.returncode == 0, out.stderr
    assert "CartPole-v1" in out.stdout


def test_the_package_ships_its_license_and_type_marker() -> None:
    assert (ROOT / "src" / "logtrick" / "py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "the logtrick authors" in license_text
    assert PROJECT["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in PROJECT["classifiers"]


# ------------------------------------------------------- functions and the modules that hold them


def namesakes(package: ModuleType) -> list[str]:
    """Public names of ``package`` that are also the names of its submodules."""
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    return sorted(set(package.__all__) & submodules)


@pytest.mark.parametrize("package", ["logtrick", "logtrick.rl", "logtrick.language"])
def test_no_public_function_shadows_a_submodule(package: str) -> None:
    """``import a.b as m`` reads the attribute ``b`` of ``a``: a function named like a submodule
    would be what ``m`` gets. Public functions live in modules with other names."""
    pkg = importlib.import_module(package)
    for name in namesakes(pkg):
        assert isinstance(getattr(pkg, name), ModuleType), f"{package}.{name} shadows its module"


def test_score_surrogate_train_and_natural_gradient_are_plain_functions() -> None:
    from logtrick import rl

    for function in (logtrick.score, logtrick.surrogate, rl.train, rl.natural_gradient):
        assert inspect.isfunction(function), function
        assert pickle.loads(pickle.dumps(function)) is function
    mu = torch.tensor(0.5)
    x = torch.tensor([1.0, -2.0])
    (s,) = logtrick.score(lambda p: torch.distributions.Normal(p[0], 1.0), [mu], x)
    torch.testing.assert_close(s, x - mu)
    cost, log_prob = torch.tensor([1.0, 3.0]), torch.zeros(2, requires_grad=True)
    loss = logtrick.surrogate(cost, log_prob, baseline="leave_one_out")
    torch.testing.assert_close(loss.detach(), cost)
    loss.sum().backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-2.0, 2.0]))
