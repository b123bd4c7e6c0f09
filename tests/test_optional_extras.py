"""Optional dependencies are imported when a feature needs them, never when a module is imported.

Each check runs in a fresh interpreter where the optional packages are made unimportable
(``sys.modules[name] = None``, as if they were not installed): every module of the package
imports, and the feature that needs one raises ``MissingExtraError`` naming the extra to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# what the extras install and no module may import at import time (the core is torch, numpy,
# gymnasium, matplotlib, rich and tensorboard)
OPTIONAL = ("ray", "transformers", "peft", "datasets", "wandb", "moviepy", "sklearn", "scipy")


def run_without(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that cannot import the optional packages."""
    block = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL)
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", block + code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


@pytest.mark.slow
def test_every_module_imports_without_the_extras(tmp_path: Path) -> None:
    out = run_without(
        "import importlib, pkgutil, logtrick\n"
        "names = [m.name for m in pkgutil.walk_packages(logtrick.__path__, 'logtrick.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 30  # the walk found the package's modules


@pytest.mark.slow
def test_ray_workers_without_ray_name_the_extra(tmp_path: Path) -> None:
    """``import logtrick.rl.workers`` works; building a worker pool raises MissingExtraError."""
    out = run_without(
        "from logtrick.rl import Config, train\n"
        "from logtrick.rl.errors import MissingExtraError\n"
        "from logtrick.rl.workers import RayCollector\n"
        "config = Config(env='CartPole-v1', workers=2, num_envs=2, num_steps=8,\n"
        "                progress=False, plot=False, tensorboard=False)\n"
        "for attempt in (lambda: RayCollector(config, None, [0, 1]), lambda: train(config)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except MissingExtraError as err:\n"
        "        print(type(err).__name__, err)\n",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout  # both raised, nothing else printed
    for line in lines:
        assert line.startswith("MissingExtraError workers:"), line
        assert "pip install 'logtrick[distributed]'" in line, line
