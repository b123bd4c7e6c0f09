"""``logtrick train | evaluate``: every user error is one line on stderr and exit code 2, before
anything is written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import registered  # noqa: F401  (registers the test environments)

from logtrick.cli import main

SMALL = ["--envs", "2", "--no-progress", "--eval-every", "0", "--set", "num_steps=8",
         "tensorboard=False", "plot=False"]  # fmt: skip


def _error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run ``main(args)``: it must exit with code 2 and one line on stderr, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2, args
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("logtrick "), err
    return err


def _run(tmp_path: Path, env: str = "CartPole-v1", steps: str = "32") -> Path:
    assert main(["train", env, "--algo", "a2c", "--steps", steps, "--out", str(tmp_path),
                 *SMALL]) == 0  # fmt: skip
    return tmp_path / f"{env}-a2c-0"


# -------------------------------------------------------------------- bad config, nothing made


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--steps", "0"], "total_steps"),
        (["--envs", "0"], "num_envs"),
        (["--eval-every", "-5"], "eval_every"),
        (["--set", "lr=nan"], "lr"),
        (["--set", "lr=inf"], "lr"),
        (["--set", "max_grad_norm=-1"], "max_grad_norm"),
        (["--set", "clip_eps=0"], "clip_eps"),
        (["--set", "ent_coef=-0.01"], "ent_coef"),
        (["--set", "target_kl=-1"], "target_kl"),
        (["--set", "total_steps=abc"], "total_steps"),
        (["--set", "hidden=abc"], "hidden"),
        (["--set", "anneal_lr=maybe"], "anneal_lr"),
        (["--set", "learning_rate=1"], "learning_rate"),
    ],
)
def test_bad_values_fail_before_anything_is_created(
    flags: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    err = _error(capsys, ["train", "LogtrickCounter-v0", "--out", str(out), "--no-progress",
                          *flags])  # fmt: skip
    assert field in err, err
    assert not out.exists()


def test_unsupported_space_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["train", "LogtrickTextObs-v0", "--out", str(tmp_path), *SMALL])
    assert "observation_space" in err and "Text" in err, err
    assert not any(tmp_path.iterdir())


def test_unwritable_out_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = _error(capsys, ["train", "LogtrickCounter-v0", "--out", str(blocker / "runs"),
                          *SMALL])  # fmt: skip
    assert "a-file" in err, err
    err = _error(capsys, ["train", "LogtrickCounter-v0", "--out", str(blocker), *SMALL])
    assert "out: " in err and "is a file; expected a directory" in err, err  # was [Errno 17]
    if os.geteuid() != 0:  # root writes through permissions
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o500)
        err = _error(capsys, ["train", "LogtrickCounter-v0", "--out", str(readonly), *SMALL])
        assert "ermission" in err, err


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_missing_empty_and_foreign_checkpoints_are_messages(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _run(tmp_path / "a")
    other = _run(tmp_path / "b", env="Acrobot-v1")
    args = (["evaluate", str(run_dir), "--episodes", "1"] if command == "evaluate"
            else ["train", "--resume", str(run_dir), "--steps", "64", "--no-progress"])  # fmt: skip
    checkpoint = run_dir / "checkpoint.pt"
    shutil.copy(other / "checkpoint.pt", checkpoint)  # another env's networks
    message = _error(capsys, args)  # the run it records, or its networks, give it away
    assert "another run: env 'Acrobot-v1'" in message or "does not fit" in message, message
    checkpoint.write_bytes(b"")  # zero bytes
    assert "empty" in _error(capsys, args)
    checkpoint.write_bytes(b"not a checkpoint")
    assert "cannot be read" in _error(capsys, args)
    checkpoint.unlink()
    assert "no checkpoint" in _error(capsys, args)


def test_evaluate_of_a_non_run_directory_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "config.json" in _error(capsys, ["evaluate", str(tmp_path)])


def test_the_summary_says_when_no_episode_has_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget shorter than one episode printed "recent training return: nan", which reads as
    a divergence; it says that no episode has ended."""
    capsys.readouterr()
    assert main(["train", "Pendulum-v1", "--algo", "a2c", "--steps", "16", "--out",
                 str(tmp_path), *SMALL]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "recent training return: none (no episode has ended yet)" in out, out
    assert "nan" not in out, out
