"""The package as users meet it: one version, the declared minimums tested, the entry points.

The minimum versions in ``pyproject.toml`` are the versions CI installs: Python from the machine
that runs ``.ci/run`` and the torch that the README's install command (which ``.ci/run`` runs)
pins. A declared minimum that CI does not test would be a promise nobody checks, so raising CI's
versions means raising the minimums. The wheel and sdist pass ``twine check`` and the wheel
installs and runs in a fresh virtual environment.
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
    """The torch version CI installs: the ``torch==X.Y.Z`` of the README's opening block, which
    ``.ci/run`` runs as written."""
    pins = re.findall(r"torch==(\d+)\.(\d+)\.\d+", (ROOT / "README.md").read_text().split("```")[1])
    assert len(pins) == 1, f"README.md's opening block: expected one torch==X.Y.Z pin, found {pins}"
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


# ----------------------------------------------------- the wheel and sdist, as users install them


def test_citation_file_is_valid_cff() -> None:
    """``CITATION.cff`` in the Citation File Format 1.2.0: its required keys, this version."""
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "type", "version", "license"} <= set(cff)
    assert cff["type"] == "software" and cff["license"] == "MIT"
    assert str(cff["version"]) == logtrick.__version__
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])


@pytest.mark.slow
def test_wheel_and_sdist_pass_twine_and_the_wheel_installs_in_a_fresh_venv(
    tmp_path: Path,
) -> None:
    """``python -m build`` makes both, ``twine check`` passes them, and the wheel, installed with
    its dependencies into a new virtual environment, imports and runs its command there."""
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    import tarfile
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "logtrick/py.typed" in names and "logtrick/rl/workers.py" in names
    with tarfile.open(sdist) as archive:
        members = {m.split("/", 1)[-1] for m in archive.getnames()}
    assert {"README.md", "LICENSE", "CITATION.cff", "pyproject.toml"} <= members
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pin = f"torch=={torch.__version__.split('+')[0]}"  # the torch installed here, not a newer one
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel), pin],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    code = (
        "import logtrick, logtrick.rl, logtrick.language, sys\n"
        "assert 'site-packages' in logtrick.__file__, logtrick.__file__\n"
        "print(logtrick.__version__, logtrick.score.__name__, logtrick.rl.Agent.__name__)\n"
    )
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [logtrick.__version__, "score", "Agent"]
    version = subprocess.run(
        [str(venv / "bin" / "logtrick"), "--version"], capture_output=True, text=True, env=env
    )
    assert version.stdout.strip() == f"logtrick {logtrick.__version__}", version.stderr
