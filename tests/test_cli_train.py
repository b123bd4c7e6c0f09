"""``logtrick train | evaluate | presets`` end to end: the README's main job learns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from logtrick.cli import main


@pytest.mark.slow
def test_default_train_solves_cartpole_and_evaluate_confirms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["train", "--out", str(tmp_path), "--no-progress", "--set", "tensorboard=False"]) == 0
    )
    out = capsys.readouterr().out
    assert "solved:" in out, out
    run_dir = tmp_path / "CartPole-v1-npg-0"  # the env's default algorithm, as rl.Config()
    assert f"run directory: {run_dir}" in out
    assert main(["evaluate", str(run_dir), "--episodes", "20"]) == 0
    line = capsys.readouterr().out
    mean = float(re.search(r"CartPole-v1: ([-\d.]+) ±", line).group(1))
    assert mean >= 475.0, line


def test_resume_from_cli_extends_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "--algo",
        "a2c",
        "--steps",
        "400",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--eval-every",
        "0",
        "--set",
        "tensorboard=False",
        "anneal_lr=False",
    ]
    assert main(args) == 0
    run_dir = tmp_path / "CartPole-v1-a2c-0"
    assert main(["train", "--resume", str(run_dir), "--steps", "800", "--no-progress"]) == 0
    assert "env steps: 800" in capsys.readouterr().out


def test_presets_and_help_show_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    table = capsys.readouterr().out
    for env in (
        "CartPole-v1",
        "Acrobot-v1",
        "LunarLander-v3",
        "Pendulum-v1",
        "MountainCarContinuous-v0",
    ):
        assert env in table
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "LunarLander-v3" in capsys.readouterr().out


def test_bad_arguments_are_messages_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as err:
        main(["train", "CartPol-v1", "--out", str(tmp_path), "--no-progress"])
    assert err.value.code == 2
    assert "CartPole-v1" in capsys.readouterr().err  # the close match is suggested
    with pytest.raises(SystemExit):
        main(["train", "--set", "learning_rate=1", "--out", str(tmp_path)])
    assert "learning_rate" in capsys.readouterr().err
