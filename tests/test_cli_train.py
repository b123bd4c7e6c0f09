"""``logtrick train | evaluate | presets`` end to end: the README's main job learns."""

from __future__ import annotations

import argparse
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


def _train_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return capsys.readouterr().out


def _train_parser() -> argparse.ArgumentParser:
    from logtrick.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_help_is_plain_text_in_groups(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No reST markup (backticks, roles, math), the five groups, and short: before, 178 lines
    of field docstrings with roles and two contradicting defaults per field."""
    out = _train_help(monkeypatch, capsys)
    assert "`" not in out and ":class:" not in out and ":math:" not in out, out
    for group in ("run", "algorithm", "network", "scale-out", "logging"):
        assert f"\n{group}:\n" in out, group
    assert len(out.splitlines()) <= 100
    assert max(map(len, out.splitlines())) <= 80


def test_train_help_shows_one_default_per_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each option but -h states exactly one default (``workers`` once said 0 on the flag and
    "else None" in the field list), and the page says "default:" once per option."""
    from logtrick.rl.config import FLAGS

    actions = [a for a in _train_parser()._actions if not isinstance(a, argparse._HelpAction)]
    assert len(actions) >= len(FLAGS) + 3  # env, --resume, --set
    for action in actions:
        assert (action.help or "").count("default") == 1, action.option_strings
    out = _train_help(monkeypatch, capsys)
    assert " ".join(out.split()).count("(default: ") == len(actions)
    assert "(default: 0)" in " ".join(out.split(" --workers N")[1].split()[:12])
    assert "else" not in out


def test_flags_and_set_give_the_python_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options, --x/--no-x switches and --set make the config rl.Config makes from the same
    fields (one path, the same defaults)."""
    from logtrick import rl
    from logtrick.cli import train_overrides

    args = _train_parser().parse_args(
        ["Acrobot-v1", "--algo", "a2c", "--hidden", "128,128", "--no-stop", "--lr", "1e-3",
         "--set", "ent_coef=0.01", "clip_value=none", "num_steps=2e1"]
    )  # fmt: skip
    got = rl.Config(**train_overrides(args))
    want = rl.Config(env="Acrobot-v1", algo="a2c", hidden=(128, 128), stop_at_threshold=False,
                     lr=1e-3, ent_coef=0.01, clip_value=None, num_steps=20)  # fmt: skip
    assert got == want
    assert rl.Config(**train_overrides(_train_parser().parse_args([]))) == rl.Config()
    assert train_overrides(_train_parser().parse_args(["--progress"])) == {"progress": True}


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
