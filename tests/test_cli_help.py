"""The command line explains itself: ``logtrick --help`` answers at once (without torch), and what
``logtrick train --help`` says a run writes is what a run writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with this checkout's sources first on the path."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"]])
def test_top_level_help_does_not_import_torch(argv: list[str]) -> None:
    """The top-level help lists the commands without importing torch (or numpy, gymnasium)."""
    out = python("-X", "importtime", "-m", "logtrick", *argv)
    assert out.returncode in (0, 2), out.stderr
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "numpy", "gymnasium"))
    assert not heavy, f"logtrick {' '.join(argv)} imported {heavy[:5]}"
    if argv == ["--help"]:
        for command in ("compare", "train", "evaluate", "presets"):
            assert re.search(rf"^\s+{command}\s+\w", out.stdout, re.M), out.stdout


def test_import_logtrick_is_cheap_until_a_name_is_used() -> None:
    code = (
        "import sys, logtrick\n"
        "assert 'torch' not in sys.modules, 'import logtrick loaded torch'\n"
        "assert logtrick.__version__\n"
        "assert 'torch' not in sys.modules\n"
        "from logtrick.estimators import resolve_estimator\n"
        "assert type(resolve_estimator('rebar')).__name__ == 'Rebar'  # registered on demand\n"
        "assert callable(logtrick.score) and 'torch' in sys.modules\n"
        "assert set(logtrick.__all__) <= set(dir(logtrick))\n"
    )
    out = python("-c", code)
    assert out.returncode == 0, out.stderr


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    import logtrick

    for name in logtrick.__all__:
        assert getattr(logtrick, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        logtrick.not_a_name  # noqa: B018


@pytest.mark.slow
def test_the_files_train_help_names_are_the_files_a_run_writes(tmp_path: Path) -> None:
    """Every run-directory file that ``logtrick train --help`` mentions exists after a run."""
    help_text = python("-m", "logtrick", "train", "--help").stdout
    named = set(re.findall(r"\b[\w-]+\.(?:png|csv|json|pt)\b", help_text))
    assert named, "train --help names no file of the run directory"
    out = python(
        "-m", "logtrick", "train", "CartPole-v1", "--steps", "256", "--out", str(tmp_path),
        "--envs", "2", "--no-progress", "--set", "num_steps=64",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    written = {p.name for p in run_dir.iterdir()}
    assert named <= written, f"named in --help but not written: {sorted(named - written)}"
